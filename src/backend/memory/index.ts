/** The in-memory adapter of the storage port: embedded default and test double, with Redis Streams semantics. */
export { MemoryBackend, type MemoryBackendOptions } from './memory-backend.js'
