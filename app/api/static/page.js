// The conversion page: plain JavaScript, no build step. It uses the public API only: the
// `formats` query, POST /v1/convert, the jobUpdates subscription (graphql-transport-ws, via the
// vendored graphql-ws client) and each job's signed download URL.
"use strict";

const FORMATS = `query Formats { formats { filetype conversions {
  inputFormat outputFormats options { outputFormat schema } } } }`;
const JOB_UPDATES = `subscription JobUpdates($jobId: ID!) { jobUpdates(jobId: $jobId) {
  id status progress error errorHint outputName outputSize downloadUrl } }`;
const MINT_HINT = "Paste a JWT (an operator mints one with `convertd keys jwt KEY_ID --ttl 1h`) " +
  "or a key restricted to this site's domain.";
// the server's reading of a file name (app/storage.py)
const COMPOUND = ["tar.gz", "tar.bz2", "tar.xz", "tar.zst"];
const ALIASES = { jpeg: "jpg", tif: "tiff", htm: "html", yml: "yaml" };

const $ = (id) => document.getElementById(id);
const state = { credential: null, formats: [], files: [], ws: null };

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function say(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
  node.hidden = !text;
}

function formatOf(name) {
  const lower = name.toLowerCase();
  const ext = COMPOUND.find((c) => lower.endsWith("." + c)) ||
    (lower.replace(/^\.+/, "").includes(".") ? lower.split(".").pop() : "");
  return ALIASES[ext] || ext;
}

// --- credential --------------------------------------------------------------------------

async function graphql(query, variables = {}) {
  const resp = await fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${state.credential}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await resp.json();
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const err = new Error(first.message);
    err.hint = first.extensions && first.extensions.hint;
    err.code = first.extensions && first.extensions.code;
    throw err;
  }
  return body.data;
}

function refused(message, hint) {
  // a refused credential is not kept, not even in memory
  state.credential = null;
  $("credential").value = "";
  $("convert").hidden = true;
  say($("access-message"), `Refused: ${message}${hint ? " " + hint : ""} ${MINT_HINT}`, true);
}

async function useCredential(event) {
  event.preventDefault();
  const value = $("credential").value.trim();
  if (!value) return;
  state.credential = value;
  if (state.ws) { state.ws.dispose(); state.ws = null; }
  say($("access-message"), "Checking…");
  try {
    state.formats = (await graphql(FORMATS)).formats;
  } catch (err) {
    if (err.code) refused(err.message, err.hint);
    else say($("access-message"), `The server could not be reached: ${err.message}`, true);
    return;
  }
  say($("access-message"), "Accepted. Choose files to convert.");
  $("convert").hidden = false;
  refreshTargets();
}

// --- files, targets, options ------------------------------------------------------------

function conversion(filetype, source) {
  const group = state.formats.find((g) => g.filetype === filetype);
  return group && group.conversions.find((c) => c.inputFormat === source);
}

// the filetype a file converts under: the one named like its format, then the server's
// order, 'hash' (checksums of anything) last; the command-line client chooses the same way
function filetypeFor(source, target) {
  const found = state.formats.filter((g) => {
    const conv = conversion(g.filetype, source);
    return conv && conv.outputFormats.includes(target);
  }).map((g) => g.filetype);
  const rank = (ft) => (ft === source ? 0 : 1) + (ft === "hash" ? 2 : 0);
  return found.sort((a, b) => rank(a) - rank(b))[0];
}

function targetsFor(source) {
  const out = new Set();
  for (const g of state.formats) {
    const conv = conversion(g.filetype, source);
    if (conv) conv.outputFormats.forEach((t) => out.add(t));
  }
  return out;
}

function addFiles(list) {
  for (const file of list) state.files.push(file);
  $("file-list").replaceChildren(...state.files.map((f) => el("li", {}, `${f.name} (${f.size.toLocaleString()} bytes)`)));
  refreshTargets();
}

function refreshTargets() {
  const select = $("target");
  const previous = select.value;
  const sets = state.files.map((f) => targetsFor(formatOf(f.name)));
  const common = sets.length ? [...sets[0]].filter((t) => sets.every((s) => s.has(t))).sort() : [];
  select.replaceChildren(el("option", { value: "" }, common.length ? "choose a format" : "choose files first"));
  common.forEach((t) => select.append(el("option", { value: t }, t)));
  select.disabled = !common.length;
  select.value = common.includes(previous) ? previous : "";
  const none = state.files.length && !common.length;
  say($("target-message"), none ? "These files have no target format in common; convert them separately." : "", true);
  buildOptions();
}

function schemaFor(target) {
  const file = state.files[0];
  if (!file || !target) return {};
  const source = formatOf(file.name);
  const conv = conversion(filetypeFor(source, target), source);
  const opt = conv && conv.options.find((o) => o.outputFormat === target);
  return (opt && opt.schema) || {};
}

// the form follows the pair's JSON schema: enums as selects (lists of enums as multiple
// selects), numbers with their bounds, booleans as checkboxes, anything else as text; left
// empty, the server's default applies
function buildOptions() {
  const form = $("options");
  const target = $("target").value;
  const props = schemaFor(target).properties || {};
  form.replaceChildren();
  for (const [name, spec] of Object.entries(props)) {
    const id = `opt-${name}`;
    let input;
    const choices = spec.type === "array" && spec.items && Array.isArray(spec.items.enum) ? spec.items.enum : null;
    if (choices) {
      input = el("select", { id, name, multiple: true, size: Math.min(choices.length, 6) });
      choices.forEach((v) => input.append(el("option", { value: JSON.stringify(v) }, String(v))));
    } else if (Array.isArray(spec.enum)) {
      input = el("select", { id, name });
      input.append(el("option", { value: "" }, spec.default !== undefined ? `default (${spec.default})` : "default"));
      spec.enum.forEach((v) => input.append(el("option", { value: JSON.stringify(v) }, String(v))));
    } else if (spec.type === "boolean") {
      input = el("input", { id, name, type: "checkbox", checked: spec.default === true });
      input.dataset.default = String(spec.default === true);
    } else if (spec.type === "integer" || spec.type === "number") {
      input = el("input", { id, name, type: "number", step: spec.type === "integer" ? "1" : "any" });
      if (spec.minimum !== undefined) input.min = spec.minimum;
      if (spec.maximum !== undefined) input.max = spec.maximum;
      const range = `${spec.minimum ?? ""}–${spec.maximum ?? ""}`;
      input.placeholder = spec.default !== undefined ? String(spec.default) : range === "–" ? "" : range;
    } else {
      input = el("input", { id, name, type: "text" });
      if (spec.default !== undefined) input.placeholder = String(spec.default);
    }
    input.dataset.kind = choices ? "list" : Array.isArray(spec.enum) ? "enum" : spec.type || "string";
    form.append(el("label", { htmlFor: id, title: spec.description || "" }, name), input);
    if (spec.description) form.append(el("small", {}, spec.description));
  }
  $("start").disabled = !target;
}

function optionValues() {
  const values = {};
  for (const input of $("options").elements) {
    const kind = input.dataset.kind;
    if (kind === "boolean") {
      if (String(input.checked) !== input.dataset.default) values[input.name] = input.checked;
    } else if (kind === "list") {
      const chosen = Array.from(input.selectedOptions, (o) => JSON.parse(o.value));
      if (chosen.length) values[input.name] = chosen;
    } else if (input.value !== "") {
      values[input.name] = kind === "enum" ? JSON.parse(input.value)
        : kind === "integer" || kind === "number" ? Number(input.value) : input.value;
    }
  }
  return values;
}

// --- conversion and live progress --------------------------------------------------------

function updatesClient() {
  if (!state.ws) {
    const url = location.origin.replace(/^http/, "ws") + "/graphql";
    state.ws = graphqlWs.createClient({
      url,
      connectionParams: { Authorization: `Bearer ${state.credential}` },
      retryAttempts: 3,
      // a refused credential closes the socket with 4403: trying again cannot help
      shouldRetry: (event) => !(event && event.code === 4403),
    });
  }
  return state.ws;
}

function row(file) {
  const cells = {
    state: el("td", {}, "uploading"),
    bar: el("progress", { max: 100, value: 0 }),
    percent: el("span", {}, " 0%"),
    result: el("td"),
  };
  const tr = el("tr", {}, el("td", {}, file.name), cells.state, el("td", {}, cells.bar, cells.percent), cells.result);
  tr.dataset.file = file.name;
  $("jobs").tBodies[0].append(tr);
  return cells;
}

function fail(cells, message, hint) {
  cells.state.textContent = "failed";
  cells.result.className = "failed";
  cells.result.replaceChildren(el("div", {}, message), hint ? el("div", { className: "hint" }, `Hint: ${hint}`) : "");
}

async function convertOne(file, target, options) {
  const cells = row(file);
  const source = formatOf(file.name);
  const form = new FormData();
  form.append("filetype", filetypeFor(source, target) || "");
  form.append("output_format", target);
  if (Object.keys(options).length) form.append("options", JSON.stringify(options));
  form.append("file", file, file.name);
  let body;
  try {
    const resp = await fetch("/v1/convert", {
      method: "POST", headers: { Authorization: `Bearer ${state.credential}` }, body: form,
    });
    body = await resp.json();
    if (resp.status === 401 || resp.status === 403) refused(body.message, body.hint);
  } catch (err) {
    return fail(cells, `The upload failed: ${err.message}`);
  }
  if (!body.job_id) return fail(cells, body.message || "The server refused the file.", body.hint);
  cells.state.textContent = "queued";
  updatesClient().subscribe({ query: JOB_UPDATES, variables: { jobId: body.job_id } }, {
    next: ({ data, errors }) => {
      if (errors && errors.length) {
        const ext = errors[0].extensions || {};
        return fail(cells, errors[0].message, ext.hint);
      }
      const job = data.jobUpdates;
      const pct = Math.round(job.progress * 100);
      cells.state.textContent = job.status.toLowerCase();
      cells.bar.value = pct;
      cells.percent.textContent = ` ${pct}%`;
      if (job.status === "FINISHED") {
        cells.result.replaceChildren(el("a", { href: job.downloadUrl, download: job.outputName },
          `Download ${job.outputName}`), ` (${(job.outputSize || 0).toLocaleString()} bytes)`);
      } else if (job.status === "FAILED") {
        fail(cells, job.error || "The conversion failed.", job.errorHint);
      }
    },
    error: (err) => {
      if (err && err.code === 4403) refused("the live-updates connection refused the credential.", "");
      else fail(cells, `Live updates stopped: ${(err && (err.reason || err.message)) || "connection closed"}`);
    },
    complete: () => {},
  });
}

function start() {
  const target = $("target").value;
  if (!target || !state.files.length || !state.credential) return;
  if (!$("options").reportValidity()) return;  // a number outside its bounds, said at the field
  const options = optionValues();
  $("jobs-section").hidden = false;
  const files = state.files;
  state.files = [];
  addFiles([]);
  files.forEach((file) => convertOne(file, target, options));
}

// --- wiring -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("credential-form").addEventListener("submit", useCredential);
  $("files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  $("target").addEventListener("change", buildOptions);
  $("start").addEventListener("click", start);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
});
