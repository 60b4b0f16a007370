// The token-health dashboard. The page holds no data: everything comes from GET /dashboard/data
// and the bulk refresh routes, fetched with the admin token the operator types in. The token is
// kept in this tab's sessionStorage and sent as a bearer header, never put in a URL. Text from
// the server is set with textContent only (an error class comes from a provider's answer).
"use strict";

(function () {
  const TOKEN_KEY = "token-refresh.admin-token";
  const REFRESH_MS = 15000;
  const POLL_MS = 500;
  const NO_WORKER_HINT_MS = 10000; // a job still pending this long waits for a worker
  const STATUSES = ["connected", "token_expired", "error", "needs_reauth", "disconnected"];
  const OUTCOME_COLOURS = { refreshed: "#1a7f37", failed: "#b42318", needs_reauth: "#a15c00", deferred: "#8a94a6" };

  const $ = (id) => document.getElementById(id);
  const charts = {};
  let latest = null;
  let timer = null;
  let followedJob = null;

  class Refused extends Error {}

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(path, options) {
    const headers = { Accept: "application/json", Authorization: "Bearer " + token() };
    if (options && options.body) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    if (response.status === 401 || response.status === 403) throw new Refused(String(response.status));
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_) { /* not JSON */ }
      throw new Error(response.status + " " + detail);
    }
    return response.json();
  }

  // --- DOM helpers ------------------------------------------------------------------------

  function cell(tag, text, className, data) {
    const element = document.createElement(tag);
    element.textContent = text === null || text === undefined ? "" : String(text);
    if (className) element.className = className;
    for (const [key, value] of Object.entries(data || {})) element.dataset[key] = value;
    return element;
  }

  function numberCell(value, data) {
    return cell("td", value, value === 0 ? "num zero" : "num", data);
  }

  function fill(table, head, rows, empty) {
    table.replaceChildren();
    const header = document.createElement("tr");
    head.forEach((title, i) => header.append(cell("th", title, i > 0 && title !== "" ? "num" : "")));
    table.append(header);
    if (rows.length === 0) {
      const row = document.createElement("tr");
      const td = cell("td", empty, "empty");
      td.colSpan = head.length;
      row.append(td);
      table.append(row);
    }
    rows.forEach((cells) => {
      const row = document.createElement("tr");
      row.append(...cells);
      table.append(row);
    });
  }

  function utcTime(iso) {
    return iso ? iso.replace("T", " ").slice(0, 16) + " UTC" : "";
  }

  // --- rendering --------------------------------------------------------------------------

  function renderConnections(data) {
    const platforms = [...new Set(data.connections.map((c) => c.platform))].sort();
    const count = {};
    data.connections.forEach((c) => { count[c.platform + "/" + c.status] = c.count; });
    const rows = platforms.map((platform) => {
      const cells = STATUSES.map((status) => numberCell(count[platform + "/" + status] || 0, { platform, status }));
      const total = STATUSES.reduce((sum, status) => sum + (count[platform + "/" + status] || 0), 0);
      return [cell("td", platform), ...cells, numberCell(total, { platform, status: "total" })];
    });
    fill($("connections"), ["platform", ...STATUSES, "total"], rows, "no connections");
  }

  function renderExpiring(data) {
    const minutes = data.expiring.bucket_minutes;
    const labels = data.expiring.counts.map((_, i) => "+" + i * minutes + "–" + (i + 1) * minutes + " min");
    $("already-expired").textContent = String(data.expiring.already_expired);
    fill(
      $("expiring"),
      ["in", "tokens"],
      data.expiring.counts.map((n, i) => [cell("td", labels[i]), numberCell(n, { bucket: String(i) })]),
      "",
    );
    chart("expiring-chart", "bar", labels, [{ label: "tokens expiring", data: data.expiring.counts, backgroundColor: "#2f5bd3" }]);
  }

  function renderActivity(data) {
    const labels = data.activity.hours.map((iso) => iso.slice(11, 13) + ":00");
    const outcomes = Object.keys(data.activity.counts);
    const totals = outcomes.map((outcome) => data.activity.counts[outcome].reduce((a, b) => a + b, 0));
    const summary = $("activity-totals");
    summary.replaceChildren();
    outcomes.forEach((outcome, i) => {
      summary.append(cell("span", outcome + " "), cell("strong", totals[i], "", { outcome }), cell("span", i < outcomes.length - 1 ? " · " : ""));
    });
    fill(
      $("activity"),
      ["hour (UTC)", ...outcomes],
      data.activity.hours.map((iso, h) => [
        cell("td", labels[h]),
        ...outcomes.map((outcome) => numberCell(data.activity.counts[outcome][h], { outcome, hour: iso })),
      ]),
      "",
    );
    chart(
      "activity-chart",
      "bar",
      labels,
      outcomes.map((outcome) => ({
        label: outcome,
        data: data.activity.counts[outcome],
        backgroundColor: OUTCOME_COLOURS[outcome] || "#555",
        stack: "outcomes",
      })),
      true,
    );
  }

  function renderFailures(data) {
    fill(
      $("failures"),
      ["error class", "outcome", "count"],
      data.failures_by_class.map((f) => [
        cell("td", f.error_class || "(none)"),
        cell("td", f.outcome),
        numberCell(f.count, { errorClass: f.error_class, outcome: f.outcome }),
      ]),
      "no failures in the last 24 h",
    );
  }

  function renderReauth(data) {
    $("reauth-total").textContent = String(data.needs_reauth.total);
    fill(
      $("reauth"),
      ["user (hashed)", "platform", "since", "error class"],
      data.needs_reauth.connections.map((c) => [
        cell("td", c.user, "", { user: c.user }),
        cell("td", c.platform),
        cell("td", utcTime(c.since)),
        cell("td", c.error_class || ""),
      ]),
      "none",
    );
  }

  function renderCircuits(data) {
    const circuits = data.circuits;
    const rows = circuits === null ? [] : Object.entries(circuits).map(([platform, state]) => [
      cell("td", platform),
      cell("td", state, "state-" + state, { platform }),
    ]);
    fill($("circuits"), ["platform", "state"], rows,
      circuits === null ? "no worker in this process (token-refresh api): circuits are the workers'" : "no platform called yet: all closed");
  }

  function renderDeadLetters(data) {
    fill(
      $("dead-letters"),
      ["topic", "records"],
      Object.entries(data.dead_letters.topics).map(([topic, n]) => [
        cell("td", topic),
        n === null ? cell("td", "no topic", "num zero", { topic }) : numberCell(n, { topic }),
      ]),
      "",
    );
    $("dlq-command").textContent = data.dead_letters.command;
  }

  function renderBulkForm(data) {
    const select = $("bulk-platform");
    if (select.options.length === 0) {
      select.append(new Option("all platforms", ""));
      data.platforms.forEach((platform) => select.append(new Option(platform, platform)));
      const fieldset = $("bulk-statuses");
      data.selectable_statuses.forEach((status) => {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = status;
        box.name = "status";
        box.checked = status === "error";
        label.append(box, document.createTextNode(" " + status));
        fieldset.append(label);
      });
    }
  }

  function chart(id, type, labels, datasets, stacked) {
    if (typeof Chart === "undefined") return; // the figures tables still show the numbers
    if (charts[id]) {
      charts[id].data.labels = labels;
      charts[id].data.datasets = datasets;
      charts[id].update("none");
      return;
    }
    charts[id] = new Chart($(id), {
      type,
      data: { labels, datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { display: datasets.length > 1 } },
        scales: { x: { stacked: !!stacked }, y: { stacked: !!stacked, beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
  }

  function render(data) {
    latest = data;
    renderConnections(data);
    renderExpiring(data);
    renderActivity(data);
    renderFailures(data);
    renderReauth(data);
    renderCircuits(data);
    renderDeadLetters(data);
    renderBulkForm(data);
    $("updated").textContent = "as of " + utcTime(data.generated_at);
    $("updated").dataset.loaded = "true";
  }

  // --- states -----------------------------------------------------------------------------

  function showRefused(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(timer);
    timer = null;
    $("board").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("updated").textContent = "";
    $("refused").textContent = "refused: the server did not accept this token (HTTP " + reason + ")";
    $("refused").hidden = false;
  }

  async function load() {
    try {
      const data = await api("/dashboard/data");
      $("login").hidden = true;
      $("refused").hidden = true;
      $("board").hidden = false;
      $("forget").hidden = false;
      render(data);
      loadJobs();
      if (timer === null) timer = setInterval(load, REFRESH_MS);
    } catch (error) {
      if (error instanceof Refused) showRefused(error.message);
      else $("updated").textContent = "could not load: " + error.message;
    }
  }

  // --- bulk refresh -----------------------------------------------------------------------

  function selection() {
    const platform = $("bulk-platform").value || null;
    const statuses = [...document.querySelectorAll("#bulk-statuses input:checked")].map((box) => box.value);
    const rate = Number($("bulk-rate").value);
    return { platform, statuses, rate };
  }

  function matched(choice) {
    return latest.connections
      .filter((c) => (choice.platform === null || c.platform === choice.platform) && choice.statuses.includes(c.status))
      .filter((c) => latest.platforms.includes(c.platform))
      .reduce((sum, c) => sum + c.count, 0);
  }

  function bulkError(message) {
    $("bulk-error").textContent = message;
    $("bulk-error").hidden = !message;
  }

  function askToConfirm(event) {
    event.preventDefault();
    bulkError("");
    const choice = selection();
    if (choice.statuses.length === 0) return bulkError("Select at least one status.");
    if (!(choice.rate > 0 && choice.rate <= 1000)) return bulkError("The rate is above 0 and at most 1000 per second.");
    const where = choice.platform || "every platform";
    $("bulk-confirm-text").textContent =
      "Refresh the " + matched(choice) + " connection(s) of " + where + " with status " + choice.statuses.join(", ") +
      " (as counted now), at most " + choice.rate + " per second per platform?";
    $("bulk-confirm").hidden = false;
    $("bulk-start").disabled = true;
  }

  function closeConfirm() {
    $("bulk-confirm").hidden = true;
    $("bulk-start").disabled = followedJob !== null;
  }

  async function startJob() {
    const choice = selection();
    closeConfirm();
    $("bulk-start").disabled = true;
    try {
      const selector = { statuses: choice.statuses };
      if (choice.platform) selector.platform = choice.platform;
      const created = await api("/refresh/bulk", {
        method: "POST",
        body: JSON.stringify({ selector, dry_run: false, rate_per_platform: choice.rate }),
      });
      follow(created.id);
    } catch (error) {
      if (error instanceof Refused) return showRefused(error.message);
      bulkError("The job was not started: " + error.message);
      $("bulk-start").disabled = false;
    }
  }

  function showJob(job, since) {
    $("bulk-progress").hidden = false;
    $("bulk-job").textContent = job.id;
    $("bulk-status").textContent = job.status;
    $("bulk-status").dataset.status = job.status;
    $("bulk-bar").value = job.percent;
    $("bulk-percent").textContent = job.percent + "%";
    let done = job.total === null ? "(counting…)" : job.done + " of " + job.total + " handled";
    if (job.status === "pending" && since && Date.now() - since > NO_WORKER_HINT_MS) {
      done = "(waiting for a worker to take the job: is `token-refresh worker` running?)";
    }
    $("bulk-done").textContent = done;
    const counts = Object.entries(job.counts).sort();
    const line = $("bulk-counts");
    line.replaceChildren();
    counts.forEach(([outcome, n], i) => {
      line.append(cell("span", outcome + " "), cell("strong", n, "", { outcome }), cell("span", i < counts.length - 1 ? " · " : ""));
    });
    $("bulk-cancel").hidden = job.status !== "pending" && job.status !== "running";
  }

  async function follow(jobId) {
    followedJob = jobId;
    const since = Date.now();
    $("bulk-cancel").disabled = false;
    while (followedJob === jobId) {
      let job;
      try {
        job = await api("/refresh/bulk/" + encodeURIComponent(jobId));
      } catch (error) {
        if (error instanceof Refused) return showRefused(error.message);
        bulkError("Following the job failed: " + error.message + "; retrying");
        await new Promise((resolve) => setTimeout(resolve, 2000));
        continue;
      }
      bulkError("");
      showJob(job, since);
      if (job.status !== "pending" && job.status !== "running") break;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    followedJob = null;
    $("bulk-start").disabled = false;
    load();
  }

  async function cancelJob() {
    if (followedJob === null) return;
    $("bulk-cancel").disabled = true;
    try {
      showJob(await api("/refresh/bulk/" + encodeURIComponent(followedJob) + "/cancel", { method: "POST" }));
    } catch (error) {
      if (error instanceof Refused) return showRefused(error.message);
      bulkError("Cancelling failed: " + error.message);
      $("bulk-cancel").disabled = false;
    }
  }

  async function loadJobs() {
    try {
      const jobs = await api("/refresh/bulk?limit=10");
      fill(
        $("bulk-jobs"),
        ["created", "selector", "status", "done", "counts"],
        jobs.map((job) => [
          cell("td", utcTime(job.created_at)),
          cell("td", job.selector ? (job.selector.platform || "all") + ": " + job.selector.statuses.join(", ") : "(unreadable selector)"),
          cell("td", job.status),
          numberCell(job.done),
          cell("td", Object.entries(job.counts).map(([k, v]) => k + " " + v).join(", ")),
        ]),
        "no jobs yet",
      );
    } catch (error) {
      if (error instanceof Refused) showRefused(error.message);
    }
  }

  // --- start ------------------------------------------------------------------------------

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("token").value.trim();
    $("token").value = "";
    if (!typed) return;
    sessionStorage.setItem(TOKEN_KEY, typed);
    load();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    window.location.reload();
  });
  $("bulk-form").addEventListener("submit", askToConfirm);
  $("bulk-go").addEventListener("click", startJob);
  $("bulk-abort").addEventListener("click", closeConfirm);
  $("bulk-cancel").addEventListener("click", cancelJob);

  if (token()) load();
})();
