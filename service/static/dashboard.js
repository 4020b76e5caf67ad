// deltamu's dashboard: a view over the JSON API (/v1), polled while a job runs. No build step: plain JS, and uPlot
// (vendor/) for the charts. The token is kept in localStorage and sent as a Bearer header; `#token=...` in the
// address (what `deltamu up` prints) stores it and is then removed from the address.
"use strict";

const TOKEN_KEY = "deltamu.token";
const POLL_MS = 2000;
const TERMINAL = ["SUCCEEDED", "FAILED", "CANCELLED"];
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf"];
const EXAMPLE_JOB = {   // examples/tiny-cpu-job.json: a minute on two CPU cores
  model: {width: 64, depth: 2}, parametrization: "mup", optimizer: {name: "adamw"},
  schedule: {steps: 120, warmup_steps: 12, batch_size: 4, seq_len: 64},
  lr_grid: {min: 0.002, max: 0.032, count: 5}, seeds: [0], data: {source: "builtin"}, eval_batches: 4, log_every: 10,
};

const $ = (id) => document.getElementById(id);
let view = 0;              // bumped on every navigation: a poll of an older view stops
let timer = null;
const charts = new Map();  // key -> uPlot, updated in place while the series stay the same

// --- the API ------------------------------------------------------------------------------------------------

class AuthNeeded extends Error {}

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

async function api(method, path, body) {
  const headers = {Accept: "application/json"};
  if (token()) headers.Authorization = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const answer = await r.json().catch(() => ({title: r.statusText}));
  if (r.status === 401 || (r.status === 403 && method === "GET")) {
    showTokenPanel(`${r.status} ${answer.title}: ${answer.detail || ""}`);
    throw new AuthNeeded(answer.detail || answer.title);
  }
  if (!r.ok) {
    const e = new Error(`${r.status} ${answer.title || "error"}${answer.detail ? ": " + answer.detail : ""}`);
    e.status = r.status;
    throw e;
  }
  return answer;
}

async function allTrials(jobId, afterStep = null) {
  // every page of /trials (each curve's points after afterStep, if given); a curve longer than one page's
  // curve_limit is asked for again from its last step
  const out = [];
  let cursor = null;
  do {
    const q = new URLSearchParams({limit: "100", curve_limit: "1000"});
    if (cursor) q.set("cursor", cursor);
    if (afterStep !== null) q.set("after_step", afterStep);
    const page = await api("GET", `/v1/jobs/${jobId}/trials?${q}`);
    let truncated = page.items.filter((t) => t.curve_truncated && t.curve.length);
    for (let round = 0; truncated.length && round < 1000; round++) {
      q.set("after_step", Math.min(...truncated.map((t) => t.curve[t.curve.length - 1].step)));
      const more = await api("GET", `/v1/jobs/${jobId}/trials?${q}`);
      const byId = new Map(more.items.map((t) => [t.id, t]));
      for (const t of truncated) {
        const m = byId.get(t.id);
        const last = t.curve[t.curve.length - 1].step;
        if (!m) { t.curve_truncated = false; continue; }
        t.curve.push(...m.curve.filter((p) => p.step > last));
        t.curve_truncated = m.curve_truncated && m.curve.some((p) => p.step > last);
      }
      truncated = truncated.filter((t) => t.curve_truncated);
    }
    out.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

// The job page's trials from poll to poll: a poll asks only for the points after the earliest last step of a
// trial still running and appends them to the curves it has. A trial first seen past its start (its earlier points
// may lie before that step) sends the poll back to a full read.
const TRIAL_DONE = ["COMPLETED", "DIVERGED", "FAILED", "CANCELLED"];
let trialCache = {jobId: null, byId: new Map()};

function lastStep(t) {
  return t.curve.length ? t.curve[t.curve.length - 1].step : -1;
}

async function jobTrials(jobId) {
  if (trialCache.jobId !== jobId) trialCache = {jobId, byId: new Map()};
  const known = trialCache.byId;
  const cached = [...known.values()];
  const live = cached.filter((t) => !TRIAL_DONE.includes(t.state));
  const after = !cached.length ? null
    : Math.max(0, live.length ? Math.min(...live.map(lastStep)) : Math.max(...cached.map(lastStep)));
  const items = await allTrials(jobId, after);
  if (after !== null && items.some((t) => !known.has(t.id) && t.state !== "PENDING")) {
    trialCache = {jobId, byId: new Map()};
    return jobTrials(jobId);
  }
  for (const t of items) {
    const old = known.get(t.id);
    if (old) {
      const last = lastStep(old);
      t.curve = old.curve.concat(t.curve.filter((p) => p.step > last));
    }
    known.set(t.id, t);
  }
  return items;
}

// --- formatting ---------------------------------------------------------------------------------------------

function fmtLR(x) {         // decimal, 3 significant digits: 0.002, 0.00447, 0.0316
  if (x == null) return "-";
  return x >= 1e-5 ? String(Number(x.toPrecision(3))) : x.toExponential(2);
}
function fmtLoss(x) { return x == null ? "-" : x.toFixed(4); }
function fmtDuration(s) {
  if (s == null) return "-";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(sec).padStart(2, "0")}`;
}
function fmtCount(x) {
  if (x == null) return "-";
  for (const [div, unit] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (x >= div) return (x / div).toFixed(1) + unit;
  return String(Math.round(x));
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c == null ? "-" : c;
    tr.appendChild(td);
  }
  return tr;
}
function doneTrials(job) {
  return TRIAL_DONE.reduce((n, s) => n + (job.trials.by_state[s] || 0), 0);
}
function bestText(job) {
  const b = job.best_so_far;
  return b ? `${fmtLoss(b.loss)} at lr ${fmtLR(b.lr)} (seed ${b.seed})` : "-";
}

// --- the token ----------------------------------------------------------------------------------------------

function showTokenPanel(reason) {
  $("token-panel").hidden = false;
  if (reason) $("token-reason").textContent = reason + ". Paste a token:";
  $("token-input").focus();
}
function renderTokenState() { $("token-state").textContent = token() ? "token set" : "no token"; }

$("token-button").addEventListener("click", () => { $("token-panel").hidden = !$("token-panel").hidden; });
$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token-input").value.trim();
  if (value) localStorage.setItem(TOKEN_KEY, value);
  $("token-input").value = "";
  $("token-panel").hidden = true;
  renderTokenState();
  route();
});
$("token-forget").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); renderTokenState(); });

// --- charts -------------------------------------------------------------------------------------------------

function chartWidth(container) { return Math.max(320, Math.min(container.clientWidth || 900, 1100)); }

function chart(key, container, title, makeOpts, data) {
  // one uPlot per key: its data replaced while its series stay the same (zoom and hidden series survive a poll)
  const signature = JSON.stringify([title, makeOpts.signature]);
  let entry = charts.get(key);
  if (entry && entry.signature === signature && entry.u.root.isConnected) {
    entry.u.setData(data);
    return entry.u;
  }
  if (entry) { entry.u.destroy(); entry.box.remove(); }
  const box = el("div", null, "chart");
  box.dataset.key = key;
  container.appendChild(box);
  const u = new uPlot({title, width: chartWidth(container), height: 300, ...makeOpts.opts}, data, box);
  charts.set(key, {u, box, signature});
  return u;
}

function dropCharts(keep) {
  for (const [key, entry] of charts) {
    if (!keep.has(key)) { entry.u.destroy(); entry.box.remove(); charts.delete(key); }
  }
}

function lrAxis(lrs) {
  // log2 scale with the grid's own learning rates as ticks, in decimal (at most 8 of them)
  const ticks = [...new Set(lrs)].sort((a, b) => a - b);
  const every = Math.ceil(ticks.length / 8);
  const shown = ticks.filter((_, i) => i % every === 0);
  return {
    scale: {time: false, distr: 3, log: 2, range: (u, lo, hi) => [Math.min(...ticks) / 1.5, Math.max(...ticks) * 1.5]},
    axis: {label: "learning rate", splits: () => shown, values: (u, splits) => splits.map(fmtLR)},
  };
}

function curvesChart(container, key, title, trials, unit) {
  // x: step; one series per trial (its current attempt): the training loss curve
  const steps = [...new Set(trials.flatMap((t) => t.curve.map((p) => p.step)))].sort((a, b) => a - b);
  const index = new Map(steps.map((s, i) => [s, i]));
  const data = [steps];
  for (const t of trials) {
    const ys = new Array(steps.length).fill(null);
    for (const p of t.curve) ys[index.get(p.step)] = p.loss;
    data.push(ys);
  }
  const series = [{label: "step"}, ...trials.map((t, i) => ({
    label: `lr ${fmtLR(t.lr)} · seed ${t.seed}`, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
    value: (u, v) => fmtLoss(v),
  }))];
  return chart(key, container, title, {
    signature: series.map((s) => s.label),
    opts: {scales: {x: {time: false}}, series,
           axes: [{label: "step"}, {label: `training loss (${unit})`, size: 60}]},
  }, data);
}

function sweepChart(container, key, title, trials, optimum, baseLr, unit) {
  // x: learning rate; per seed the final validation loss; diverged trials as crosses on the top edge; the band of
  // learning rates within the seed noise of the best shaded; the optimum (and a transfer's base lr*) as lines
  const lrs = [...new Set(trials.map((t) => t.lr))].sort((a, b) => a - b);
  if (!lrs.length) return null;
  const seeds = [...new Set(trials.map((t) => t.seed))].sort((a, b) => a - b);
  const finite = trials.filter((t) => t.state === "COMPLETED" && t.final_val_loss != null).map((t) => t.final_val_loss);
  const top = finite.length ? Math.max(...finite) + 0.05 * (Math.max(...finite) - Math.min(...finite) + 1e-3) : 1;
  const data = [lrs];
  const series = [{label: "lr", value: (u, v) => fmtLR(v)}];
  seeds.forEach((seed, i) => {
    const at = new Map(trials.filter((t) => t.seed === seed && t.state === "COMPLETED")
                             .map((t) => [t.lr, t.final_val_loss]));
    data.push(lrs.map((lr) => (at.has(lr) ? at.get(lr) : null)));
    series.push({label: `seed ${seed}`, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
                 points: {show: true, size: 7}, value: (u, v) => fmtLoss(v)});
  });
  const diverged = new Set(trials.filter((t) => t.state === "DIVERGED").map((t) => t.lr));
  if (diverged.size) {
    data.push(lrs.map((lr) => (diverged.has(lr) ? top : null)));
    series.push({label: "diverged", stroke: "#000", paths: () => null, value: (u, v) => (v == null ? "-" : "yes"),
                 points: {show: true, size: 10, width: 2, fill: "#fff", stroke: "#d62728"}});
  }
  const axis = lrAxis(lrs);
  const band = optimum && optimum.near_best_lr_min != null && optimum.near_best_lr_max > optimum.near_best_lr_min
    ? [optimum.near_best_lr_min, optimum.near_best_lr_max] : null;
  const vline = (u, x, color, dash) => {
    const px = u.valToPos(x, "x", true);
    u.ctx.save();
    u.ctx.strokeStyle = color;
    u.ctx.lineWidth = 1.5 * devicePixelRatio;
    u.ctx.setLineDash(dash.map((d) => d * devicePixelRatio));
    u.ctx.beginPath();
    u.ctx.moveTo(px, u.bbox.top);
    u.ctx.lineTo(px, u.bbox.top + u.bbox.height);
    u.ctx.stroke();
    u.ctx.restore();
  };
  const hooks = {
    drawClear: [(u) => {
      if (!band) return;
      const x0 = u.valToPos(band[0], "x", true), x1 = u.valToPos(band[1], "x", true);
      u.ctx.save();
      u.ctx.fillStyle = "rgba(0, 0, 0, 0.09)";
      u.ctx.fillRect(Math.min(x0, x1), u.bbox.top, Math.abs(x1 - x0), u.bbox.height);
      u.ctx.restore();
    }],
    draw: [(u) => {
      if (optimum && optimum.lr != null) vline(u, optimum.lr, "#000", [6, 4]);
      if (baseLr != null) vline(u, baseLr, "#888", [2, 3]);
    }],
  };
  return chart(key, container, title, {
    signature: [series.map((s) => s.label), band, optimum && optimum.lr, baseLr],
    opts: {scales: {x: axis.scale}, series, hooks,
           axes: [axis.axis, {label: `final validation loss (${unit})`, size: 60}]},
  }, data);
}

// --- the job list -------------------------------------------------------------------------------------------

async function showList(myView) {
  $("list-view").hidden = false;
  if (!$("submit-body").value) $("submit-body").value = JSON.stringify(EXAMPLE_JOB, null, 2);
  const page = await api("GET", "/v1/jobs?limit=100");
  if (myView !== view) return;
  const body = $("jobs-table").querySelector("tbody");
  body.replaceChildren(...page.items.map((job) => {
    const link = el("a", job.id.slice(0, 8));
    link.href = `#/jobs/${job.id}`;
    const progress = el("progress");
    progress.max = 1;
    progress.value = job.progress;
    const cell = el("span");
    cell.append(progress, ` ${Math.round(100 * job.progress)} %` +
                (job.eta_seconds == null ? "" : ` · ETA ${fmtDuration(job.eta_seconds)}`));
    return row([link, el("span", job.state, `state ${job.state}`), cell,
                job.queue_position == null ? "-" : `${job.queue_position} ahead`, bestText(job),
                job.optimum ? fmtLR(job.optimum.lr) : "-", job.widths.join(", "),
                new Date(job.created_at).toLocaleString()]);
  }));
  $("jobs-empty").hidden = page.items.length > 0;
  timer = setTimeout(() => poll(myView, () => showList(myView)), POLL_MS);
}

$("submit-button").addEventListener("click", async () => {
  $("submit-error").textContent = "";
  let body;
  try {
    body = JSON.parse($("submit-body").value);
  } catch (e) {
    $("submit-error").textContent = "not valid JSON: " + e.message;
    return;
  }
  try {
    const job = await api("POST", "/v1/jobs", body);
    location.hash = `#/jobs/${job.id}`;
  } catch (e) {
    $("submit-error").textContent = e.message;
  }
});

// --- one job ------------------------------------------------------------------------------------------------

let currentJob = null;

async function showJob(myView, jobId) {
  $("job-view").hidden = false;
  const [job, trials] = await Promise.all([api("GET", `/v1/jobs/${jobId}`), jobTrials(jobId)]);
  if (myView !== view) return;
  currentJob = job;
  renderJob(job, trials.filter((t) => !t.retried));
  if (!TERMINAL.includes(job.state)) timer = setTimeout(() => poll(myView, () => showJob(myView, jobId)), POLL_MS);
}

function renderJob(job, trials) {
  $("job-id").textContent = job.id;
  const budget = job.spec.target_tokens;            // the recommendation's budget when the field is left empty
  $("rec-tokens").placeholder = budget ? `the job's: ${fmtCount(budget)}` : "optional";
  $("job-state").textContent = job.state;
  $("job-state").className = `state ${job.state}`;
  $("job-progress").value = job.progress;
  const queued = job.queue_position == null ? "" : ` · queued, ${job.queue_position} job(s) ahead`;
  const eta = job.eta_seconds == null ? "" : ` · ETA ${fmtDuration(job.eta_seconds)}`;
  $("job-progress-text").textContent =
    `${Math.round(100 * job.progress)} % · ${doneTrials(job)}/${job.trials.total} trials${queued}${eta}`;
  $("job-best").textContent = bestText(job) + (job.best_so_far ? ` ${job.loss_unit}` : "");
  const opt = job.optimum;
  $("best-lr").textContent = opt && opt.lr != null ? fmtLR(opt.lr) : "-";
  $("optimum-detail").textContent = !opt ? "(once every trial has finished)" :
    `(loss ${fmtLoss(opt.loss)}${opt.on_edge ? "; on the grid's edge: a bound, widen the grid" : ""}` +
    (opt.near_best_lr_max > opt.near_best_lr_min
      ? `; within the seed noise: ${fmtLR(opt.near_best_lr_min)} to ${fmtLR(opt.near_best_lr_max)})` : ")");
  $("job-rate").textContent = job.tokens_per_second == null ? "-" :
    `${fmtCount(job.tokens_per_second)} tokens/s · ${fmtCount(job.tokens_trained)} of ${fmtCount(job.tokens_total)}` +
    ` tokens · ${fmtDuration(job.elapsed_seconds)} elapsed`;
  const warnings = [...(opt ? opt.warnings : []), ...(job.transfer ? job.transfer.warnings : [])];
  $("job-warnings").replaceChildren(...warnings.map((w) => el("p", "warning: " + w, "warning")));
  $("job-error").textContent = job.error || "";
  $("cancel-button").hidden = TERMINAL.includes(job.state) || job.state === "CANCELLING";
  for (const u of document.querySelectorAll(".loss-unit")) u.textContent = `(${job.loss_unit})`;
  if (!$("rec-width").value) $("rec-width").value = 4 * job.widths[0] > 4096 ? 4 * job.widths[0] : 4096;

  const keep = new Set();
  const widths = job.widths;
  const transferWidths = job.transfer ? new Map(job.transfer.widths.map((w) => [w.width, w])) : new Map();
  const baseLr = opt ? opt.lr : null;
  for (const width of widths) {
    const at = trials.filter((t) => t.width === width);
    const suffix = widths.length > 1 ? `width ${width}` : `width ${width}, ${at.length} trials`;
    curvesChart($("curves-charts"), `curves-${width}`, suffix, at, job.loss_unit);
    keep.add(`curves-${width}`);
    const own = width === widths[0] ? opt : (transferWidths.get(width) || {}).optimum;
    const sweep = sweepChart($("sweep-charts"), `sweep-${width}`, suffix, at, own,
                             width === widths[0] ? null : baseLr, job.loss_unit);
    if (sweep) keep.add(`sweep-${width}`);
  }
  dropCharts(keep);
  renderTransfer(job);

  const body = $("trials-table").querySelector("tbody");
  body.replaceChildren(...trials.map((t) => {
    const last = t.curve.length ? t.curve[t.curve.length - 1] : null;
    return row([t.point, t.width, fmtLR(t.lr), t.seed, t.attempt, el("span", t.state, `state ${t.state}`),
                fmtLoss(t.final_val_loss), last ? fmtLoss(last.loss) : "-", last ? last.step : "-",
                fmtCount(t.tokens ?? (last ? last.tokens : null)), t.seconds == null ? "-" : t.seconds.toFixed(1),
                t.worker, t.reason || t.error || ""]);
  }));
}

function renderTransfer(job) {
  const box = $("transfer");
  if (!job.transfer) { box.replaceChildren(); return; }
  const tr = job.transfer;
  const verdict = (x) => (x == null ? "unknown" : x ? "yes" : "no");
  const table = el("table", null, "data");
  table.appendChild(row(["width", "argmin lr", "shift (grid steps)", "loss at base lr*", "regret"]));
  for (const w of tr.widths) {
    table.appendChild(row([w.width, w.optimum ? fmtLR(w.optimum.lr) : "-",
                           w.shift_steps == null ? "-" : w.shift_steps.toFixed(2), fmtLoss(w.transfer_loss),
                           w.regret == null ? "-" : w.regret.toFixed(4)]));
  }
  box.replaceChildren(el("h3", `Transfer from width ${tr.base_width} (lr* ${fmtLR(tr.base_lr)})`), table,
                      el("p", `argmin within one grid step: ${verdict(tr.argmin_within_one_step)}; loss falls ` +
                              `with width: ${verdict(tr.loss_falls_with_width)}. ${tr.regret_note}`, "hint"));
}

$("cancel-button").addEventListener("click", async () => {
  if (!currentJob) return;
  try {
    await api("POST", `/v1/jobs/${currentJob.id}/cancel`);
    route();
  } catch (e) {
    showError(e);
  }
});

// --- the recommendation -------------------------------------------------------------------------------------

$("rec-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!currentJob) return;
  $("rec-error").textContent = "";
  const width = $("rec-width").value.trim();
  const tokens = $("rec-tokens").value.trim();
  const q = new URLSearchParams({width});
  if (tokens) q.set("tokens", tokens);          // sent only when filled
  try {
    const rec = await api("GET", `/v1/jobs/${currentJob.id}/recommendation?${q}`);
    renderRecommendation(rec, currentJob, width, tokens);
  } catch (e) {
    $("rec-result").hidden = true;
    $("rec-error").textContent = e.message;
  }
});

function renderRecommendation(rec, job, width, tokens) {
  $("rec-result").hidden = false;
  const p = rec.parametrization;
  $("rec-summary").textContent = `${p.name} (${p.readout} readout, ${p.width_axis} axis), ${rec.optimizer.name}: ` +
    `base width ${rec.base_width} -> ${rec.target_width} (m = ${Number(rec.width_mult.toPrecision(4))}), ` +
    `base lr ${fmtLR(rec.base_lr)}; target ${(rec.target_model.num_params / 1e6).toFixed(1)}M parameters.`;
  $("rec-groups").querySelector("tbody").replaceChildren(...rec.groups.map((g) => row([
    g.role, fmtLR(g.lr), Number(g.lr_multiplier.toPrecision(4)), g.init,
    g.init_std == null ? "-" : Number(g.init_std.toPrecision(4)), g.weight_decay])));
  const fm = rec.forward_multipliers;
  $("rec-multipliers").textContent = `forward multipliers: logits x ${Number(fm.logits.toPrecision(4))}, gated ` +
    `delta rule scale ${Number(fm.gdn_scale.toPrecision(4))}`;
  $("rec-warnings").replaceChildren(...rec.warnings.map((w) => el("li", w, "warning")));
  const opt = rec.optimizer;
  const build = opt.name === "adamw"
    ? `torch.optim.AdamW(groups, betas=rec.optimizer.betas, eps=rec.optimizer.eps)`
    : `torch.optim.SGD(groups, momentum=rec.optimizer.momentum, nesterov=True)`;
  $("rec-snippet").textContent = [
    "import deltamu, torch",
    "",
    "# the token: DELTAMU_TOKEN, or .deltamu/token as `deltamu up` wrote it (Client(url, token) to pass one)",
    `rec = deltamu.Client(${JSON.stringify(location.origin)}).job(${JSON.stringify(job.id)}).recommendation(` +
      `${Number(width)}${tokens ? `, tokens=${Number(tokens)}` : ""})`,
    `model = ...   # your model at width ${rec.target_width}: deltamu's GDNModel or fla's GatedDeltaNetForCausalLM`,
    "groups = deltamu.apply(model, rec)   # checks its shapes, draws its init, installs the multipliers",
    `optimizer = ${build}`,
  ].join("\n");
}

$("rec-copy").addEventListener("click", async () => {
  const text = $("rec-snippet").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("rec-copy").textContent = "copied";
  } catch (e) {      // no clipboard outside a secure context: select it for Ctrl+C
    const range = document.createRange();
    range.selectNodeContents($("rec-snippet"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("rec-copy").textContent = "selected: press Ctrl+C";
  }
  setTimeout(() => { $("rec-copy").textContent = "copy"; }, 2000);
});

// --- navigation ---------------------------------------------------------------------------------------------

function showError(e) {
  if (e instanceof AuthNeeded) return;
  $("error").hidden = false;
  $("error").textContent = e.message;
}

async function poll(myView, refresh) {
  if (myView !== view) return;
  try {
    await refresh();
    $("error").hidden = true;
  } catch (e) {
    showError(e);
    if (!(e instanceof AuthNeeded) && myView === view) timer = setTimeout(() => poll(myView, refresh), 2 * POLL_MS);
  }
}

function route() {
  view += 1;
  clearTimeout(timer);
  const myView = view;
  $("error").hidden = true;
  $("list-view").hidden = true;
  $("job-view").hidden = true;
  const m = location.hash.match(/^#\/jobs\/([^/?#]+)/);
  if (m) {
    if (!currentJob || currentJob.id !== decodeURIComponent(m[1])) {
      dropCharts(new Set());
      $("rec-result").hidden = true;
      $("rec-width").value = "";
      $("rec-tokens").value = "";
    }
    poll(myView, () => showJob(myView, decodeURIComponent(m[1])));
  } else {
    currentJob = null;
    dropCharts(new Set());
    poll(myView, () => showList(myView));
  }
}

if (location.hash.startsWith("#token=")) {
  localStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice("#token=".length)));
  history.replaceState(null, "", location.pathname + "#/");
}
renderTokenState();
window.addEventListener("hashchange", route);
route();
