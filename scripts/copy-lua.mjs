// tsc does not copy non-TypeScript files: the Lua scripts are read at run time
// next to the compiled adapter, so copy them into dist/.
import { cpSync } from 'node:fs'
cpSync('src/backend/redis/lua', 'dist/src/backend/redis/lua', { recursive: true })
