import { createEventManager } from '../../src/index.js'
import { defineConformanceSuite } from './suite.js'

defineConformanceSuite('memory', (options) => createEventManager({ backend: 'memory', env: {}, ...options }))
