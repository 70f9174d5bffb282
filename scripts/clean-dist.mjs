// A build starts from an empty dist/, so a pack never ships files of modules that no longer exist.
import { rmSync } from 'node:fs'
rmSync('dist', { recursive: true, force: true })
