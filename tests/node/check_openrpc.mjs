// Checks a running server's OpenRPC document with tools nobody here wrote:
//   node tests/node/check_openrpc.mjs http://127.0.0.1:8000
// 1. @open-rpc/schema-utils-js: validateOpenRPCDocument (the official meta-schema, with its
//    format checks) and parseOpenRPCDocument (dereferencing) accept the document as served;
// 2. every schema in it compiles, strictly, with ajv's draft-07 class and with Ajv2020;
// 3. every example (method params and results, components) is valid for both, and a few
//    probes derived from the examples get the same verdict from both.
// Prints one line per problem and exits 1 if there was any; prints a summary and exits 0.
import Ajv from "ajv";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { parseOpenRPCDocument, validateOpenRPCDocument } from "@open-rpc/schema-utils-js";

const base = (process.argv[2] || "http://127.0.0.1:8000").replace(/\/+$/, "");
const problems = [];
const problem = (text) => problems.push(text);
// Where the components live for ajv: `#/components/schemas/X` is rewritten to this + X.
const COMPONENTS = "https://openrpc.invalid/components/schemas/";

async function fetchJson(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function rewriteRefs(node) {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== "object") return node;
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === "$ref" && typeof value === "string" && value.startsWith("#/components/schemas/")) {
      out[key] = COMPONENTS + value.slice("#/components/schemas/".length);
    } else {
      out[key] = rewriteRefs(value);
    }
  }
  return out;
}

function makeValidators(AjvClass, label, components) {
  // strict: unknown keywords (e.g. `unevaluatedProperties` for draft-07), ignored keywords
  // and ambiguous types are errors, not silently different meanings.
  const ajv = new AjvClass({ strict: true, strictTypes: true, strictRequired: false,
    allowUnionTypes: true, allErrors: true });
  addFormats(ajv);
  for (const [name, schema] of Object.entries(components)) {
    try {
      ajv.addSchema(rewriteRefs(schema), COMPONENTS + name);
    } catch (err) {
      problem(`${label}: components.schemas.${name} is refused: ${err.message}`);
    }
  }
  const cache = new Map();
  return {
    label,
    compile(where, schema) {
      if (!cache.has(where)) {
        try {
          cache.set(where, ajv.compile(rewriteRefs(schema)));
        } catch (err) {
          problem(`${label}: ${where} does not compile: ${err.message}`);
          cache.set(where, null);
        }
      }
      return cache.get(where);
    },
  };
}

// Values that differ from an example in ways a schema usually cares about.
function probes(value) {
  const out = [];
  if (value && typeof value === "object" && !Array.isArray(value)) {
    out.push({ ...value, zz_unknown_property: 1 });
    for (const key of Object.keys(value)) {
      const { [key]: _dropped, ...rest } = value;
      out.push(rest);
      out.push({ ...value, [key]: { unexpected: [1] } });
    }
  }
  return out;
}

function check(validators, where, schema, examples) {
  const compiled = validators.map((v) => [v.label, v.compile(where, schema)]);
  if (compiled.some(([, fn]) => !fn)) return 0;
  let count = 0;
  for (const example of examples) {
    for (const [label, fn] of compiled) {
      count += 1;
      if (!fn(example)) {
        problem(`${label}: example of ${where} is invalid: ${JSON.stringify(fn.errors)}`);
      }
    }
    for (const probe of probes(example)) {
      const verdicts = compiled.map(([, fn]) => fn(probe));
      count += 1;
      if (new Set(verdicts).size > 1) {
        problem(`${where}: draft-07 and 2020-12 disagree on ${JSON.stringify(probe)}: ` +
          compiled.map(([label], i) => `${label}=${verdicts[i]}`).join(" "));
      }
    }
  }
  return count;
}

async function main() {
  const doc = await fetchJson(`${base}/openrpc.json`);
  const discovered = await fetchJson(`${base}/rpc`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "rpc.discover" }),
  });
  if (JSON.stringify(discovered.result) !== JSON.stringify(doc)) {
    problem("rpc.discover does not answer the document GET /openrpc.json serves");
  }

  const valid = validateOpenRPCDocument(structuredClone(doc));
  if (valid !== true) problem(`validateOpenRPCDocument: ${valid.message}`);
  try {
    await parseOpenRPCDocument(structuredClone(doc));
  } catch (err) {
    problem(`parseOpenRPCDocument: ${err.message}`);
  }
  for (const server of doc.servers || []) {
    if (!/^https?:\/\/[^/]+/.test(server.url)) problem(`server url is not absolute: ${server.url}`);
  }

  const components = (doc.components && doc.components.schemas) || {};
  const validators = [
    makeValidators(Ajv, "ajv draft-07", components),
    makeValidators(Ajv2020, "ajv 2020-12", components),
  ];
  let checks = 0;
  for (const [name, schema] of Object.entries(components)) {
    checks += check(validators, `components.schemas.${name}`, schema, schema.examples || []);
  }
  for (const method of doc.methods) {
    const params = method.params || [];
    for (const param of params) {
      const values = (method.examples || []).flatMap(
        (ex) => ex.params.filter((p) => p.name === param.name).map((p) => p.value));
      checks += check(validators, `${method.name} param ${param.name}`, param.schema, values);
    }
    const results = (method.examples || []).map((ex) => ex.result.value);
    checks += check(validators, `${method.name} result`, method.result.schema, results);
    for (const ex of method.examples || []) {
      const names = new Set(params.map((p) => p.name));
      for (const p of ex.params) {
        if (!names.has(p.name)) problem(`${method.name} example "${ex.name}": unknown param ${p.name}`);
      }
    }
  }

  for (const line of problems) console.log(line);
  if (problems.length) {
    console.log(`${problems.length} problem(s)`);
    process.exit(1);
  }
  console.log(`ok: ${doc.methods.length} methods, ${Object.keys(components).length} component ` +
    `schemas, ${checks} checks, server url ${doc.servers[0].url}`);
}

main().catch((err) => {
  console.log(`check_openrpc: ${err.stack || err}`);
  process.exit(1);
});
