// Type-checks every ```ts block of README.md under strict TypeScript, as a user's
// module importing `rx-redis-streams`, `rx-redis-streams/operators` and
// `rx-redis-streams/testing`.
//
//   node scripts/check-readme.mjs                   against the sources of this checkout
//   node scripts/check-readme.mjs --root <project>  against the package installed in <project>
//                                                   (scripts/check-package.sh: the packed tarball)
//
// Each block is a module of its own. A block that uses a name it does not
// declare (the Tour's `events`, `UserSignup`, the `t` of io-ts) is compiled
// together with the earlier block that declares it: their imports are merged,
// their statements concatenated in README order. The functions the examples
// call but the README never defines (the reader's own code: sendWelcomeMail,
// apply, saveCount, ...) are declared in PRELUDE below, and the reader's modules
// an example imports (`../src/mailer.js`) in USER_MODULES: keep both minimal,
// and typed as a reader would write them.
//
// Nothing is written to disk: the blocks are virtual files served to the
// compiler. Exit code 0 when every block type-checks, 1 otherwise (each error
// with its README line).
import { readFileSync } from 'node:fs'
import console from 'node:console'
import process from 'node:process'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** The reader's own functions that the examples call. */
const PRELUDE = `
import type { Message } from 'rx-redis-streams'
declare global {
  /** A signup as the examples decode it (\`t.type({ userId: t.number, email: t.string })\`). */
  function sendWelcomeMail(user: { readonly userId: number; readonly email: string }): Promise<void>
  /** Applies one account event (\`orderedBy\` example). */
  function apply(message: Message): Promise<void>
  /** Stores a per-minute count (windows example). */
  function saveCount(key: string, windowStart: number, count: number): Promise<void>
  /** Marks an order paid / reminds its user (join example). */
  function markPaid(order: Message<{ readonly orderId: string }>): Promise<void>
  function remind(order: Message<{ readonly orderId: string }>): Promise<void>
  /** A dead letter id the reader picked (dead letters example). */
  const someId: string
}
export {}
`

/** The reader's modules that an example imports, relative to the example's file (blocks/). */
const USER_MODULES = {
  'src/mailer.d.ts': [
    "import type * as t from 'io-ts'",
    'export declare const UserSignup: t.TypeC<{ userId: t.NumberC; email: t.StringC }>',
    'export declare function sendWelcomeMail(user: t.TypeOf<typeof UserSignup>): Promise<void>',
    '',
  ].join('\n'),
}

/** What a strict user project compiles with. */
const COMPILER_OPTIONS = {
  strict: true,
  noUncheckedIndexedAccess: true,
  exactOptionalPropertyTypes: true,
  verbatimModuleSyntax: true,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  moduleDetection: ts.ModuleDetectionKind.Force,
  target: ts.ScriptTarget.ES2022,
  lib: ['lib.es2023.d.ts'],
  types: ['node'],
  skipLibCheck: true,
  noEmit: true,
}

function parseArguments(argv) {
  const options = { root: undefined, readme: join(REPO, 'README.md'), verbose: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--root') options.root = resolve(argv[++i] ?? '.')
    else if (arg === '--readme') options.readme = resolve(argv[++i] ?? 'README.md')
    else if (arg === '--verbose') options.verbose = true
    else throw new Error(`unknown argument ${arg} (use --root <project>, --readme <file>, --verbose)`)
  }
  return options
}

/** The ```ts blocks: their text and the README line of their first line. */
function extractBlocks(markdown) {
  const lines = markdown.split('\n')
  const blocks = []
  let open = null
  let heading = ''
  lines.forEach((line, index) => {
    if (open === null && /^#{1,6} /.test(line)) heading = line.replace(/^#+ /, '')
    if (open === null) {
      const fence = /^(\s*)```(ts|typescript)\s*$/.exec(line)
      if (fence) open = { startLine: index + 2, heading, lines: [] }
    } else if (/^\s*```\s*$/.test(line)) {
      blocks.push({ index: blocks.length, heading: open.heading, startLine: open.startLine, text: open.lines.join('\n') })
      open = null
    } else {
      open.lines.push(line)
    }
  })
  return blocks
}

/** Top-level imports and statements of a block, and the names it declares. */
function analyse(block) {
  const source = ts.createSourceFile(`block-${block.index}.ts`, block.text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS)
  const imports = []
  const statements = []
  const declared = new Set()
  const addBinding = (name) => {
    if (ts.isIdentifier(name)) declared.add(name.text)
    else for (const element of name.elements) if (!ts.isOmittedExpression(element)) addBinding(element.name)
  }
  for (const statement of source.statements) {
    const line = source.getLineAndCharacterOfPosition(statement.getStart(source)).line
    const endLine = source.getLineAndCharacterOfPosition(statement.getEnd()).line
    const text = statement.getText(source)
    if (ts.isImportDeclaration(statement)) {
      const clause = statement.importClause
      const specifier = statement.moduleSpecifier.getText(source)
      const entry = { specifier, line: block.startLine + line, typeOnly: clause?.isTypeOnly ?? false, defaultName: undefined, namespace: undefined, named: [] }
      if (clause?.name) {
        entry.defaultName = clause.name.text
        declared.add(clause.name.text)
      }
      const bindings = clause?.namedBindings
      if (bindings && ts.isNamespaceImport(bindings)) {
        entry.namespace = bindings.name.text
        declared.add(bindings.name.text)
      } else if (bindings) {
        for (const element of bindings.elements) {
          entry.named.push(element.getText(source))
          declared.add(element.name.text)
        }
      }
      imports.push(entry)
      continue
    }
    if (ts.isVariableStatement(statement)) for (const d of statement.declarationList.declarations) addBinding(d.name)
    else if ((ts.isFunctionDeclaration(statement) || ts.isClassDeclaration(statement) || ts.isInterfaceDeclaration(statement) || ts.isTypeAliasDeclaration(statement) || ts.isEnumDeclaration(statement)) && statement.name) {
      declared.add(statement.name.text)
    }
    // Keep the comments that lead a statement out: only code and its README line matter.
    statements.push({ text, line: block.startLine + line, lines: endLine - line + 1 })
  }
  return { imports, statements, declared }
}

/** One module made of `members` (block indexes, in README order), with a map from its lines to README lines. */
function compose(members, analysed) {
  const bySpecifier = new Map()
  const out = []
  const readmeLine = []
  for (const index of members) {
    for (const entry of analysed[index].imports) {
      const key = `${entry.specifier}${entry.typeOnly ? ' type' : ''}`
      let merged = bySpecifier.get(key)
      if (merged === undefined) {
        merged = { ...entry, named: [] }
        bySpecifier.set(key, merged)
      }
      merged.defaultName ??= entry.defaultName
      merged.namespace ??= entry.namespace
      for (const name of entry.named) if (!merged.named.includes(name)) merged.named.push(name)
    }
  }
  for (const entry of bySpecifier.values()) {
    const type = entry.typeOnly ? 'type ' : ''
    if (entry.namespace !== undefined) {
      out.push(`import ${type}* as ${entry.namespace} from ${entry.specifier}`)
      readmeLine.push(entry.line)
    }
    const parts = [entry.defaultName, entry.named.length > 0 ? `{ ${entry.named.join(', ')} }` : undefined].filter((p) => p !== undefined)
    if (parts.length > 0 || entry.namespace === undefined) {
      out.push(parts.length > 0 ? `import ${type}${parts.join(', ')} from ${entry.specifier}` : `import ${entry.specifier}`)
      readmeLine.push(entry.line)
    }
  }
  for (const index of members) {
    for (const statement of analysed[index].statements) {
      const lines = statement.text.split('\n')
      lines.forEach((text, i) => {
        out.push(text)
        readmeLine.push(statement.line + i)
      })
    }
  }
  return { text: `${out.join('\n')}\n`, readmeLine }
}

/** A compiler host that serves the virtual files first, the disk otherwise. */
function hostWith(virtualFiles) {
  const host = ts.createCompilerHost(COMPILER_OPTIONS, true)
  const { getSourceFile, fileExists, readFile, directoryExists } = host
  const virtualDirectories = new Set([...virtualFiles.keys()].flatMap((file) => {
    const dirs = []
    for (let dir = dirname(file); dir !== dirname(dir); dir = dirname(dir)) dirs.push(dir)
    return dirs
  }))
  host.directoryExists = (dir) => virtualDirectories.has(resolve(dir)) || (directoryExists?.call(host, dir) ?? true)
  host.fileExists = (file) => virtualFiles.has(resolve(file)) || fileExists.call(host, file)
  host.readFile = (file) => virtualFiles.get(resolve(file)) ?? readFile.call(host, file)
  host.getSourceFile = (file, language, onError, create) => {
    const text = virtualFiles.get(resolve(file))
    return text === undefined ? getSourceFile.call(host, file, language, onError, create) : ts.createSourceFile(file, text, language, true)
  }
  return host
}

const CANNOT_FIND_NAME = new Set([2304, 2552, 18004]) // cannot find name / did you mean / no value in scope for shorthand property

function main() {
  const options = parseArguments(process.argv.slice(2))
  const blocks = extractBlocks(readFileSync(options.readme, 'utf8'))
  const analysed = blocks.map(analyse)
  const projectRoot = options.root ?? REPO
  // In the checkout the package resolves to its sources; in a project, to what npm installed.
  const compilerOptions = { ...COMPILER_OPTIONS, typeRoots: [join(projectRoot, 'node_modules/@types')] }
  if (options.root === undefined) {
    compilerOptions.paths = {
      'rx-redis-streams': [join(REPO, 'src/index.ts')],
      'rx-redis-streams/operators': [join(REPO, 'operators/index.ts')],
      'rx-redis-streams/testing': [join(REPO, 'src/testing.ts')],
    }
  }
  const base = join(projectRoot, '.readme-check')
  const preludeFile = join(base, 'prelude.ts')
  const blockFile = (index) => join(base, 'blocks', `block-${String(index + 1).padStart(2, '0')}.ts`)
  const members = blocks.map((b) => [b.index])

  let program
  let diagnostics = []
  for (let round = 0; round < blocks.length + 1; round++) {
    const virtualFiles = new Map([[preludeFile, PRELUDE]])
    for (const [path, text] of Object.entries(USER_MODULES)) virtualFiles.set(join(base, path), text)
    const composed = blocks.map((b) => compose(members[b.index], analysed))
    blocks.forEach((b) => virtualFiles.set(blockFile(b.index), composed[b.index].text))
    program = ts.createProgram({ rootNames: [preludeFile, ...blocks.map((b) => blockFile(b.index))], options: compilerOptions, host: hostWith(virtualFiles), oldProgram: program })
    diagnostics = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics(), preludeFile, ...blocks.map((b) => blockFile(b.index))].flatMap((item) => {
      if (typeof item !== 'string') return [item]
      const file = program.getSourceFile(item)
      return file === undefined ? [] : [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]
    })
    // A name a block uses without declaring it: bring in the nearest earlier block that declares it.
    let grew = false
    for (const d of diagnostics) {
      if (!CANNOT_FIND_NAME.has(d.code) || d.file === undefined || d.start === undefined) continue
      const index = blocks.findIndex((b) => resolve(d.file.fileName) === blockFile(b.index))
      if (index < 0) continue
      const name = d.file.text.slice(d.start, d.start + (d.length ?? 0))
      for (let j = index - 1; j >= 0; j--) {
        if (analysed[j].declared.has(name)) {
          const joined = new Set([...members[index], ...members[j]])
          if (joined.size > members[index].length) {
            members[index] = [...joined].sort((a, b) => a - b)
            grew = true
          }
          break
        }
      }
    }
    if (!grew) break
  }

  // Report each error once, at its README line, under the block that contains that line.
  const composed = blocks.map((b) => compose(members[b.index], analysed))
  const seen = new Set()
  const failures = new Map()
  const other = []
  for (const d of diagnostics) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n  ')
    const index = d.file === undefined ? -1 : blocks.findIndex((b) => resolve(d.file.fileName) === blockFile(b.index))
    if (index < 0) {
      other.push(d.file === undefined ? message : `${d.file.fileName}: ${message}`)
      continue
    }
    const line = composed[index].readmeLine[d.file.getLineAndCharacterOfPosition(d.start ?? 0).line] ?? blocks[index].startLine
    const key = `${line}:${d.code}:${message}`
    if (seen.has(key)) continue
    seen.add(key)
    const owner = blocks.findLast((b) => b.startLine <= line) ?? blocks[index]
    const list = failures.get(owner.index) ?? []
    list.push(`  README.md:${line}: TS${d.code}: ${message}`)
    failures.set(owner.index, list)
  }

  const against = options.root === undefined ? 'the sources' : `the package installed in ${options.root}`
  for (const b of blocks) {
    const deps = members[b.index].filter((i) => i !== b.index).map((i) => `block ${i + 1}`)
    const label = `block ${b.index + 1} (README.md:${b.startLine}, "${b.heading}")${deps.length > 0 ? ` with ${deps.join(', ')}` : ''}`
    const errors = failures.get(b.index)
    if (errors === undefined) {
      if (options.verbose) console.log(`ok    ${label}`)
    } else {
      console.log(`FAIL  ${label}`)
      for (const e of errors) console.log(e)
    }
  }
  for (const message of other) console.log(`error: ${message}`)
  const failed = failures.size + (other.length > 0 ? 1 : 0)
  console.log(`README check against ${against}: ${blocks.length - failures.size} of ${blocks.length} TypeScript blocks type-check${failed > 0 ? '' : ' (all)'}`)
  process.exitCode = failed > 0 ? 1 : 0
}

main()
