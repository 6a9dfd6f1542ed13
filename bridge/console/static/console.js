// n8n-bridge console: the pages work without this script; it adds confirmations and live
// refresh. No token ever reaches it: requests carry the session cookie, set HttpOnly.

const EVENT_TYPES = [
  "workflow.queued", "workflow.started", "workflow.completed", "workflow.failed",
  "workflow.cancelled", "callback.delivered", "callback.failed", "queue.threshold",
];

// A button with data-confirm asks before its form is sent.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const question = (button && button.dataset.confirm) || event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

const live = document.getElementById("live");
let pending = null;
let last = 0;

async function refresh() {
  pending = null;
  // Not while someone works inside the part that would be replaced.
  if (live.contains(document.activeElement) && document.activeElement !== live) {
    schedule(2000);
    return;
  }
  last = Date.now();
  const answer = await fetch(window.location.href, {
    headers: { "X-Console-Partial": "1" },
    credentials: "same-origin",
    redirect: "follow",
  });
  if (answer.redirected && new URL(answer.url).pathname.endsWith("/login")) {
    window.location.assign(answer.url); // the session ended
    return;
  }
  if (answer.ok) live.innerHTML = await answer.text();
}

function schedule(delay) {
  if (pending === null) pending = window.setTimeout(refresh, Math.max(delay, last + 1000 - Date.now()));
}

if (live) {
  const mode = document.body.dataset.live;
  if (mode === "events") {
    // From the page's own moment on: what happened while it connected is not missed.
    const after = document.body.dataset.eventsAfter;
    const source = new EventSource("/admin/ui/events" + (after ? `?last_event_id=${after}` : ""));
    for (const type of EVENT_TYPES) source.addEventListener(type, () => schedule(300));
  }
  const every = Number(document.body.dataset.refresh || 0);
  if (every > 0) window.setInterval(() => schedule(0), every * 1000);
}
