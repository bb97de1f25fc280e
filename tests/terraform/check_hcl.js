// check_hcl: a structural check of deploy/terraform without Terraform (not installable on the build machines).
// Parses every .tf file with @cdktf/hcl2json (HashiCorp's HCL v2 parser compiled to WebAssembly) and checks, per
// module directory:
//   - every var.X, local.X, module.X, data.T.N and resource reference T.N (providers google, random) resolves
//     to a declaration in that directory; module.X.Y names an output of module X;
//   - every module call's source exists, passes only variables that module declares and every one it requires;
//   - file()/templatefile() paths under path.module exist, and a template's ${...} and %{ for } names are among
//     the variables passed to it;
//   - formatting as `terraform fmt` leaves it: 2-space indentation (one level per line that opens brackets), no tabs or trailing
//     blanks, and `=` aligned across consecutive single-line attributes (hclwrite's rule: a line whose value
//     opens a bracket it does not close, a blank line or a comment ends the run).
// Usage: node check_hcl.js DIR...   Exit 0 when clean, 1 with one line per problem.
'use strict';
const fs = require('fs');
const path = require('path');
const { parse } = require('@cdktf/hcl2json');

const problems = [];
const problem = (file, msg) => problems.push(`${file}: ${msg}`);
const META_ARGS = new Set(['source', 'version', 'providers', 'count', 'for_each', 'depends_on']);
const BUILTIN_ROOTS = new Set(['each', 'count', 'path', 'terraform', 'self']);
const RESOURCE_TYPE = /^(google|google-beta|random)_[a-z0-9_]+$/;

// Every ${...} expression in a value (hcl2json renders expressions as "${...}" strings), nested ones included.
function expressions(text) {
  const out = [];
  for (let i = text.indexOf('${'); i !== -1; i = text.indexOf('${', i + 2)) {
    let depth = 0, j = i + 1;
    for (; j < text.length; j++) {
      if (text[j] === '{') depth++;
      else if (text[j] === '}' && --depth === 0) break;
    }
    out.push(text.slice(i + 2, j));
  }
  return out;
}

// References in one expression: [kind, name, attr] (kind: var, local, module, data, resource, other).
function references(expr) {
  const refs = [];
  const re = /(^|[^A-Za-z0-9_.\-"])([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_-]*)(?:\.([A-Za-z_][A-Za-z0-9_-]*))?/g;
  // Text inside string literals is not code: blank out nested ${...} (checked on their own below), then strings.
  let code = expr;
  for (const e of expressions(expr)) code = code.replace('${' + e + '}', ' '.repeat(e.length + 3));
  code = code.replace(/"(?:[^"\\]|\\.)*"/g, (s) => ' '.repeat(s.length));
  let m;
  while ((m = re.exec(code)) !== null) {
    const [, , a, b, c] = m;
    if (a === 'var' || a === 'local') refs.push([a, b]);
    else if (a === 'module') refs.push(['module', b, c]);
    else if (a === 'data') refs.push(['data', `${b}.${c}`]);
    else if (RESOURCE_TYPE.test(a)) refs.push(['resource', `${a}.${b}`]);
    re.lastIndex = m.index + m[0].length;
  }
  for (const e of expressions(expr)) refs.push(...references(e));
  return refs;
}

function walk(value, visit) {
  if (typeof value === 'string') visit(value);
  else if (Array.isArray(value)) value.forEach((v) => walk(v, visit));
  else if (value && typeof value === 'object') Object.entries(value).forEach(([k, v]) => { visit(k); walk(v, visit); });
}

function checkFormat(file, text) {
  const lines = text.split('\n');
  const indents = []; // hclwrite's formatIndent: one level per line that opens brackets, whatever their number
  let chain = [];
  const closeChain = () => {
    if (chain.length > 1) {
      const want = Math.max(...chain.map((l) => l.lead)) + 1;
      for (const l of chain) if (l.eq !== want) problem(file, `line ${l.n}: '=' at column ${l.eq + 1}, terraform fmt puts it at ${want + 1}`);
    } else if (chain.length === 1 && chain[0].eq !== chain[0].lead + 1) {
      problem(file, `line ${chain[0].n}: one space before '='`);
    }
    chain = [];
  };
  lines.forEach((line, i) => {
    const n = i + 1;
    if (/\t/.test(line)) problem(file, `line ${n}: tab`);
    if (/\s+$/.test(line)) problem(file, `line ${n}: trailing whitespace`);
    const trimmed = line.trim();
    // scan the line: brackets outside strings, the first top-level '=' of an attribute
    let net = 0, eq = -1, inStr = false, interp = [];
    for (let j = 0; j < line.length; j++) {
      const ch = line[j];
      if (inStr) {
        if (ch === '\\') { j++; continue; }
        if (ch === '$' && line[j + 1] === '{') { interp.push(net); net++; inStr = false; j++; continue; }
        if (ch === '"') inStr = false;
        continue;
      }
      if (ch === '#' || (ch === '/' && line[j + 1] === '/')) break;
      if (ch === '"') { inStr = true; continue; }
      if ('{[('.includes(ch)) net++;
      else if ('}])'.includes(ch)) {
        net--;
        if (interp.length && interp[interp.length - 1] === net) { interp.pop(); inStr = true; continue; }
      } else if (ch === '=' && eq === -1 && net === 0 && !'=!<>'.includes(line[j - 1] || '') && !'=>'.includes(line[j + 1] || '')) {
        eq = j;
      }
    }
    const indent = line.length - line.trimStart().length;
    let want = 2 * indents.length;
    if (net > 0) {
      indents.push(net);
    } else if (net < 0) {
      let closed = -net;
      while (closed > 0 && indents.length) {
        const top = indents[indents.length - 1];
        if (closed >= top) { closed -= top; indents.pop(); } else { indents[indents.length - 1] -= closed; closed = 0; }
      }
      want = 2 * indents.length;
    }
    if (trimmed !== '' && indent !== want) problem(file, `line ${n}: indented ${indent}, terraform fmt indents ${want}`);
    const isAttr = eq > 0 && !trimmed.startsWith('#') && net === 0;
    if (isAttr) chain.push({ n, eq, lead: line.slice(0, eq).trimEnd().length });
    else closeChain();
  });
  closeChain();
  if (!text.endsWith('\n') || text.endsWith('\n\n')) problem(file, 'must end with exactly one newline');
}

async function loadModule(dir) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.tf')).sort();
  const mod = { dir, files: {}, vars: {}, locals: new Set(), resources: new Set(), data: new Set(), modules: {}, outputs: new Set() };
  for (const f of files) {
    const full = path.join(dir, f);
    const text = fs.readFileSync(full, 'utf8');
    checkFormat(full, text);
    let doc;
    try {
      doc = await parse(f, text);
    } catch (e) {
      problem(full, `does not parse: ${e.message || e}`);
      continue;
    }
    mod.files[full] = doc;
    for (const [name, blocks] of Object.entries(doc.variable || {})) {
      if (mod.vars[name]) problem(full, `variable ${name} declared twice`);
      mod.vars[name] = blocks[0];
    }
    for (const block of doc.locals || []) for (const name of Object.keys(block)) {
      if (mod.locals.has(name)) problem(full, `local ${name} declared twice`);
      mod.locals.add(name);
    }
    for (const [type, byName] of Object.entries(doc.resource || {})) for (const name of Object.keys(byName)) mod.resources.add(`${type}.${name}`);
    for (const [type, byName] of Object.entries(doc.data || {})) for (const name of Object.keys(byName)) mod.data.add(`${type}.${name}`);
    for (const [name, blocks] of Object.entries(doc.module || {})) mod.modules[name] = blocks[0];
    for (const name of Object.keys(doc.output || {})) mod.outputs.add(name);
  }
  return mod;
}

function templateNames(text) {
  const names = new Set(), bound = new Set();
  for (const m of text.matchAll(/%\{\s*for\s+([A-Za-z_]\w*)(?:\s*,\s*([A-Za-z_]\w*))?\s+in\s+([A-Za-z_]\w*)/g)) {
    bound.add(m[1]); if (m[2]) bound.add(m[2]); names.add(m[3]);
  }
  for (const m of text.matchAll(/%\{\s*if\s+([^}]*)\}/g)) for (const w of m[1].matchAll(/[A-Za-z_]\w*/g)) if (!['length', 'true', 'false'].includes(w[0])) names.add(w[0]);
  for (const m of text.matchAll(/(?<!\$)\$\{\s*([A-Za-z_]\w*)/g)) names.add(m[1]);
  return [...names].filter((n) => !bound.has(n));
}

async function main() {
  const roots = process.argv.slice(2);
  const dirs = new Set();
  const findDirs = (d) => {
    if (fs.readdirSync(d).some((f) => f.endsWith('.tf'))) dirs.add(path.resolve(d));
    for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory() && !e.name.startsWith('.')) findDirs(path.join(d, e.name));
  };
  roots.forEach(findDirs);
  const mods = {};
  for (const d of [...dirs].sort()) mods[d] = await loadModule(d);
  let nrefs = 0;
  for (const mod of Object.values(mods)) {
    for (const [file, doc] of Object.entries(mod.files)) {
      walk(doc, (s) => {
        for (const e of expressions(s)) for (const [kind, name, attr] of references(e)) {
          nrefs++;
          if (kind === 'var' && !(name in mod.vars)) problem(file, `var.${name} is not declared`);
          if (kind === 'local' && !mod.locals.has(name)) problem(file, `local.${name} is not declared`);
          if (kind === 'data' && !mod.data.has(name)) problem(file, `data.${name} is not declared`);
          if (kind === 'resource' && !mod.resources.has(name)) problem(file, `${name} is not declared`);
          if (kind === 'module') {
            const call = mod.modules[name];
            if (!call) { problem(file, `module.${name} is not declared`); continue; }
            const target = mods[path.resolve(mod.dir, call.source)];
            if (target && attr && !target.outputs.has(attr)) problem(file, `module.${name}.${attr}: ${call.source} has no output ${attr}`);
          }
        }
        for (const m of s.matchAll(/(file|templatefile)\("\$\{path\.module\}\/([^"]+)"/g)) {
          const p = path.join(mod.dir, m[2]);
          if (!fs.existsSync(p)) { problem(file, `${m[1]}(): ${p} does not exist`); continue; }
          if (m[1] === 'templatefile') {
            const passed = new Set([...s.slice(m.index).matchAll(/^\s*([a-z_]+)\s*=/gm)].map((x) => x[1]));
            for (const n of templateNames(fs.readFileSync(p, 'utf8'))) if (!passed.has(n)) problem(file, `template ${m[2]} uses ${n}, which is not passed`);
          }
        }
      });
    }
    for (const [name, call] of Object.entries(mod.modules)) {
      const target = mods[path.resolve(mod.dir, call.source || '')];
      if (!target) { problem(mod.dir, `module ${name}: source ${call.source} is no module directory here`); continue; }
      for (const arg of Object.keys(call)) if (!META_ARGS.has(arg) && !(arg in target.vars)) problem(mod.dir, `module ${name} passes ${arg}, which ${call.source} does not declare`);
      for (const [v, decl] of Object.entries(target.vars)) if (!('default' in decl) && !(v in call)) problem(mod.dir, `module ${name} does not pass required variable ${v}`);
    }
    for (const [v, decl] of Object.entries(mod.vars)) if (!decl.description) problem(mod.dir, `variable ${v} has no description`);
  }
  for (const p of problems) console.log(p);
  const n = Object.values(mods).reduce((a, m) => a + Object.keys(m.files).length, 0);
  console.log(`${Object.keys(mods).length} module directories, ${n} files, ${nrefs} references checked, ${problems.length} problem(s)`);
  process.exit(problems.length ? 1 : 0);
}
main().catch((e) => { console.error(e); process.exit(2); });
