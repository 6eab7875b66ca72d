// The twistproxy status page: polls the admin API (GET status, GET history)
// every two seconds and draws what it answers; the charts are inline SVG.
// The token, when the API needs one, is asked once, kept in this tab's
// sessionStorage and sent as an Authorization header: never in a URL.
"use strict";
(() => {
  const KEY = "twistproxy-admin-token";
  const EVERY = 2000;
  const HOUR = 3600;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(KEY) || "";
  let timer = null;

  class NeedToken extends Error {}

  async function api(path, method = "GET") {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, { method, headers, cache: "no-store", credentials: "omit" });
    if (response.status === 401) throw new NeedToken();
    let body = {};
    try { body = await response.json(); } catch (e) { /* not JSON: keep {} */ }
    return { ok: response.ok, code: response.status, body };
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  // -- formats --------------------------------------------------------------

  const none = "–";
  const rate = (x) => (x == null ? none : x < 10 ? x.toFixed(2) : x.toFixed(0));
  const share = (x) => (x == null ? none : (100 * x).toFixed(x < 0.1 ? 2 : 1) + " %");
  const latency = (x) => (x == null ? none : x < 1 ? (1000 * x).toFixed(1) + " ms" : x.toFixed(2) + " s");
  const bytes = (n) => (n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB");
  const clock = (t) => (t == null ? none : new Date(t * 1000).toLocaleTimeString());

  function age(seconds) {
    const parts = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
    const out = [];
    for (const [size, unit] of parts) {
      if (seconds >= size && out.length < 2) {
        out.push(Math.floor(seconds / size) + " " + unit);
        seconds %= size;
      }
    }
    return out.join(" ") || "0 s";
  }

  const stateClass = (state) => "state state-" + String(state).replace(/\W+/g, "-");

  // -- charts ---------------------------------------------------------------

  // Lines of numbers (null where there is nothing) as paths in a small SVG.
  // With `step` (seconds per value), the chart has its axes and, for
  // those who do not see it, the numbers in a table (per minute).
  function chart(box, lines, label, format, step) {
    const width = 300, height = 60;
    const values = lines.flatMap((line) => line.values.filter((v) => v != null));
    const max = Math.max(0, ...values);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${label}: highest ${format(max)}, now ${format(values.length ? lines[0].values.at(-1) : null)}`);
    for (const line of lines) {
      const step = width / Math.max(1, line.values.length - 1);
      let d = "", up = true;
      line.values.forEach((v, i) => {
        if (v == null) { up = true; return; }
        const y = height - 2 - (max ? (v / max) * (height - 4) : 0);
        // A point alone is drawn as a short dash.
        d += `${up ? "M" : "L"}${(i * step).toFixed(1)},${y.toFixed(1)}${up ? "h1.5" : ""}`;
        up = false;
      });
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      path.setAttribute("class", line.cls);
      path.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(path);
    }
    box.replaceChildren(svg, el("span", { class: "max" }, "max " + format(max)));
    if (!step) return;
    const minutes = Math.round((lines[0].values.length * step) / 60);
    box.append(el("span", { class: "zero", "aria-hidden": "true" }, format(0)),
      el("div", { class: "axis", "aria-hidden": "true" },
        el("span", {}, `${minutes} min ago`), el("span", {}, "now")),
      numbers(lines, label, format, step));
  }

  // A chart's values as a table, one row a minute (the mean of its
  // values), newest first.
  function numbers(lines, label, format, step) {
    const per = Math.max(1, Math.round(60 / step));
    const count = Math.ceil(lines[0].values.length / per);
    const rows = [];
    for (let i = count - 1; i >= 0; i--) {
      const cells = lines.map((line) => {
        const known = line.values.slice(i * per, (i + 1) * per).filter((v) => v != null);
        return el("td", { class: "n" }, known.length ? format(known.reduce((a, b) => a + b, 0) / known.length) : none);
      });
      const ago = count - 1 - i;
      rows.push(el("tr", {}, el("th", { scope: "row" }, ago ? `${ago} min ago` : "last minute"), ...cells));
    }
    return el("details", { class: "numbers" }, el("summary", {}, "The numbers"),
      el("table", {}, el("caption", {}, `${label}, mean per minute`),
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Minute"),
          ...lines.map((line) => el("th", { scope: "col", class: "n" }, line.name || label)))),
        el("tbody", {}, ...rows)));
  }

  function spark(values, label) {
    const box = el("div", { class: "chart spark" });
    chart(box, [{ values, cls: "requests" }], label, (x) => String(x ?? none));
    return box;
  }

  // A backend's last hour (or since the proxy started) as coloured
  // stretches, one per state.
  function stretches(backend, events, end, started) {
    const mine = events.filter((e) => e.upstream === backend.upstream && e.backend === backend.backend);
    const begin = Math.min(end - 1, Math.max(end - HOUR, started));
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${end - begin} 10`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "stretches");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", mine.length
      ? `${mine.length} state changes in the last hour`
      : `${backend.state} for the whole last hour`);
    let from = begin, state = mine.length ? mine[0].from : backend.state;
    for (const event of mine.concat([{ time: end, to: backend.state }])) {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", Math.max(0, from - begin));
      rect.setAttribute("width", Math.max(0, event.time - Math.max(from, begin)));
      rect.setAttribute("height", 10);
      rect.setAttribute("class", stateClass(state));
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${state} from ${clock(from)}`;
      rect.append(title);
      svg.append(rect);
      from = event.time;
      state = event.to;
    }
    return svg;
  }

  // -- the sections ---------------------------------------------------------

  const figure = ([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value));

  function overview(status, history) {
    const workers = status.workers || [];
    const rows = [
      ["Version", status.version],
      ["Up for", age(status.uptime)],
      ["Configuration", el("span", { title: `${status.config.source || ""} ${status.config.digest}` },
        `${(status.config.source || "made in code").split("/").pop()} (${status.config.digest.slice(0, 19)}…)`)],
      ["Configuration loaded", `${clock(status.config.loaded)} (${age(Math.max(0, history.end - status.config.loaded))} ago)`],
      ["Workers", workers.length ? `${workers.filter((w) => w.pid).length} of ${workers.length} running` : "one process"],
      ["Open connections", history.connections],
      ["Requests per second", rate(history.minute.requests_per_second)],
      ["Error rate (5xx)", share(history.minute.error_rate)],
      ["Latency p50 / p99", `${latency(history.minute.p50)} / ${latency(history.minute.p99)}`],
    ];
    $("overview").replaceChildren(...rows.map(figure));
    $("version").textContent = status.version;
    $("window").textContent = Math.round(history.seconds / 60);
    chart($("chart-requests"), [{ values: history.requests, cls: "requests" }], "Requests per second", rate, 1);
    chart($("chart-errors"), [{ values: history.errors, cls: "errors" }], "5xx answers per second", rate, 1);
    chart($("chart-latency"), [{ values: history.p99, cls: "p99", name: "p99" }, { values: history.p50, cls: "p50", name: "p50" }],
      "Latency p99 and p50", latency, history.slot);
  }

  function groups(status, history) {
    const byGroup = new Map();
    for (const backend of Object.values(history.backends)) {
      if (!backend.upstream) continue; // gone since: traffic only
      if (!byGroup.has(backend.upstream)) byGroup.set(backend.upstream, []);
      byGroup.get(backend.upstream).push(backend);
    }
    const out = [];
    for (const [name, backends] of [...byGroup].sort()) {
      const figures = history.upstreams[name] || {};
      const rows = backends.map((b) => {
        const drain = b.state !== "draining";
        const key = `${drain ? "drain" : "undrain"} ${name}/${b.backend}`;
        return el("tr", {},
          el("th", { scope: "row" }, b.backend),
          el("td", {}, el("span", { class: stateClass(b.state) }, b.state), b.detail ? el("small", {}, " " + b.detail) : ""),
          el("td", { class: "n" }, b.in_flight),
          el("td", { class: "n" }, rate(b.requests_per_second)),
          el("td", { class: "n" }, share(b.error_rate)),
          el("td", { class: "n" }, `${latency(b.p50)} / ${latency(b.p99)}`),
          el("td", {}, b.since ? `${clock(b.since)}` : none),
          el("td", {}, stretches(b, history.timeline, history.end, history.end - status.uptime)),
          el("td", {}, el("button", {
            type: "button", "data-key": key,
            onclick: () => act(drain ? `Drain backend ${b.backend} of ${name}? It gets no new requests.` : `Put backend ${b.backend} of ${name} back in rotation?`,
              `upstreams/${encodeURIComponent(name)}/${encodeURIComponent(b.backend)}/${drain ? "drain" : "undrain"}`,
              (body) => `Backend ${body.backend} of ${body.upstream} is ${body.draining ? "draining" : "back in rotation"}.`),
          }, drain ? "Drain" : "Undrain")));
      });
      out.push(el("article", { class: "group" },
        el("h3", {}, name),
        el("p", {}, `${rate(figures.requests_per_second)} req/s · errors ${share(figures.error_rate)} · p50 ${latency(figures.p50)} · p99 ${latency(figures.p99)} at the backends`),
        places(history.places?.[name]),
        el("div", { class: "scroll" }, el("table", {},
          el("thead", {}, el("tr", {}, ...["Backend", "State", "In flight", "Req/s", "Failures", "p50 / p99", "Since", "Last hour", "Action"]
            .map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, ...rows)))));
    }
    $("groups").replaceChildren(...(out.length ? out : [el("p", {}, "No upstream groups.")]));
  }

  // For GSLB and locality: what each region (and zone) of a group
  // received in the last minute.
  function places(regions) {
    if (!regions) return "";
    const zones = (r) => r.zones.filter((z) => z.zone).map((z) => `${z.zone} ${share(z.share)}`);
    return el("p", { class: "places" }, "Share of requests by region, last minute: ",
      ...regions.flatMap((r, i) => [i ? " · " : "", el("strong", {}, r.region || "(no region)"),
        ` ${share(r.share)}${zones(r).length ? ` (${zones(r).join(", ")})` : ""}`]));
  }

  function timeline(history) {
    const items = history.timeline.slice().reverse().map((e) => el("li", {},
      el("time", { datetime: new Date(e.time * 1000).toISOString() }, clock(e.time)), " ",
      `${e.upstream} ${e.backend}: `,
      el("span", { class: stateClass(e.from) }, e.from), " → ",
      el("span", { class: stateClass(e.to) }, e.to),
      e.detail ? ` (${e.detail})` : "", e.worker ? `, seen by worker ${e.worker}` : ""));
    $("timeline").replaceChildren(...(items.length ? items : [el("li", {}, "No change.")]));
  }

  // What /status says of a route beyond its hosts, path prefix, methods
  // and upstream: the conditions go with where it applies, the rest
  // (split, answers, rewrites, overrides, mirror, filters) with what it does.
  const OWN_COLUMNS = new Set(["name", "hosts", "path_prefix", "methods", "upstream", "split"]);
  const CONDITIONS = new Set(["path_exact", "path_regex", "host_regex", "headers", "query",
    "cookies", "networks", "listeners"]);
  const setting = ([key, value]) => el("div", { class: "setting" },
    `${key} ${typeof value === "object" ? JSON.stringify(value) : value}`);

  function routes(status, history) {
    const rows = status.routes.map((route) => {
      const figures = history.routes[route.name || "-"] || {};
      const where = `${route.hosts.length ? route.hosts.join(", ") : "any host"} ${route.path_prefix}` +
        (route.methods.length ? ` (${route.methods.join(", ")})` : "");
      const more = Object.entries(route).filter(([key]) => !OWN_COLUMNS.has(key));
      const to = route.split ? route.split.map((s) => `${s.upstream} ${s.weight}`).join(" · ")
        : route.upstream;
      return el("tr", {},
        el("th", { scope: "row" }, route.name || "(unnamed)"),
        el("td", {}, where, ...more.filter(([key]) => CONDITIONS.has(key)).map(setting)),
        el("td", {}, to, ...more.filter(([key]) => !CONDITIONS.has(key)).map(setting)),
        el("td", { class: "n" }, rate(figures.requests_per_second)),
        el("td", { class: "n" }, share(figures.error_rate)),
        el("td", { class: "n" }, latency(figures.p50)),
        el("td", { class: "n" }, latency(figures.p99)),
        el("td", {}, figures.requests ? spark(figures.requests, "requests per 10 s") : none));
    });
    $("routes").tBodies[0].replaceChildren(...rows);
  }

  function listeners(status) {
    $("listeners").replaceChildren(...status.listeners.map((l) => el("li", {},
      el("strong", {}, l.name), ` ${l.endpoint}, ${l.address ? "listening on " + l.address : "not listening"}${l.tls ? ", TLS" : ""}`)));
    $("workers").replaceChildren(...(status.workers || []).map((w) => el("li", {},
      `Worker ${w.index}: ${w.pid ? "process " + w.pid : "starting again"}, restarted ${w.restarts} times`)));
    const certificates = (status.certificates || []).map((c) => {
      const days = Math.floor((Date.parse(c.not_after) - Date.now()) / 86400000);
      const state = days < 0 ? "expired" : days < 14 ? "expires soon" : "valid";
      return el("li", {},
        el("strong", {}, c.listener), ` ${c.names.join(", ") || c.subject}: `,
        el("span", { class: stateClass(state) }, state),
        ` ${days < 0 ? "since" : "until"} ${c.not_after.slice(0, 10)}${days >= 0 ? ` (${days} days left)` : ""}`);
    });
    $("certificates").replaceChildren(...(certificates.length ? certificates
      : [el("li", {}, status.certificates ? "No TLS listener." : "Not known now (no worker answered).")]));
  }

  function cache(history) {
    const c = history.cache;
    const served = (c.hit || 0) + (c.stale || 0), asked = served + (c.miss || 0);
    $("cache").replaceChildren(
      figure(["Hit ratio, last 15 minutes", asked ? share(served / asked) : none]),
      figure(["Size now", history.cache_size ? `${history.cache_size.entries} entries, ` +
        `${bytes(history.cache_size.bytes)} of ${bytes(history.cache_size.max_bytes)}`
        : history.has_cache ? "not known for this store" : "no cache configured"]),
      ...Object.entries(c).map(figure));
    $("purge").hidden = !history.has_cache; // nothing to purge without a cache
    const refusals = Object.entries(history.refusals);
    $("refusals").replaceChildren(...(refusals.length
      ? refusals.map(([reason, n]) => el("li", {}, `${reason}: ${n}`))
      : [el("li", {}, "None.")]));
  }

  // -- actions --------------------------------------------------------------

  async function act(question, path, done) {
    if (!window.confirm(question)) return;
    const result = $("result");
    result.textContent = "Working…";
    try {
      const answer = await api(path, "POST");
      result.className = answer.ok ? "ok" : "failed";
      result.textContent = answer.ok ? done(answer.body)
        : `Refused (${answer.code}): ${answer.body.error || (answer.body.problems || []).join("; ") || "no reason given"}`;
    } catch (e) {
      if (e instanceof NeedToken) return askToken(true);
      result.className = "failed";
      result.textContent = "The proxy did not answer: " + e.message;
    }
    refresh();
  }

  // -- polling and the token ------------------------------------------------

  function askToken(refused) {
    clearTimeout(timer);
    $("main").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = refused && token ? "That token was refused." : "";
    $("connection").textContent = "The admin API needs a token.";
    $("token").focus();
  }

  async function refresh() {
    clearTimeout(timer);
    timer = setTimeout(refresh, EVERY);
    if (document.hidden) return; // asked again when the tab is shown
    try {
      const [status, history] = await Promise.all([api("status"), api("history")]);
      if (!status.ok || !history.ok) throw new Error(status.body.error || history.body.error || "error");
      const focused = document.activeElement && document.activeElement.dataset.key;
      overview(status.body, history.body);
      groups(status.body, history.body);
      timeline(history.body);
      routes(status.body, history.body);
      listeners(status.body);
      cache(history.body);
      if (focused) document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
      $("main").hidden = false;
      $("login").hidden = true;
      $("forget").hidden = !token;
      $("connection").textContent = "Live, every two seconds.";
      $("connection").className = "";
      const now = new Date();
      $("updated").textContent = now.toLocaleTimeString();
      $("updated").setAttribute("datetime", now.toISOString());
    } catch (e) {
      if (e instanceof NeedToken) return askToken(true);
      $("connection").textContent = `Cannot read the proxy's status (${e.message}); trying again.`;
      $("connection").className = "failed";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token").value;
      $("token").value = "";
      sessionStorage.setItem(KEY, token);
      refresh();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      token = "";
      askToken(false);
    });
    $("reload").addEventListener("click", () => act("Read the configuration and certificates again?", "reload",
      (body) => `Reloaded the ${body.reloaded}.`));
    $("purge").addEventListener("submit", (event) => {
      event.preventDefault();
      const kind = $("purge-kind").value, value = $("purge-value").value;
      act(`Remove every cached response with ${kind} ${value}?`,
        `cache/purge?${kind}=${encodeURIComponent(value)}`,
        (body) => `Purged ${body.purged} cached responses.`);
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    refresh();
  });
})();
