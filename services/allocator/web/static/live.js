// Keeps a page's live part as the server renders it: the element with data-live names a stream
// of server-sent events, each carrying the part's new HTML (rendered and escaped by the server).
"use strict";
(function () {
  const part = document.querySelector("[data-live]");
  if (!part || !window.EventSource) {
    return;
  }
  const source = new EventSource(part.getAttribute("data-live"));
  source.addEventListener("fragment", function (event) {
    part.innerHTML = event.data;
    part.setAttribute("data-updated", String(Date.now()));
  });
  function say(text) {
    if (!document.querySelector(".live-note")) {
      const note = document.createElement("p");
      note.className = "live-note";
      note.setAttribute("role", "status");
      note.textContent = text;
      part.before(note);
    }
  }
  // The session ended (signed out, expired, the token changed): the server says so and stops.
  source.addEventListener("signed-out", function (event) {
    source.close();
    part.classList.add("stale");
    say(event.data);
  });
  source.addEventListener("error", function () {
    part.classList.add("stale");
    // Closed for good (the browser retries on its own otherwise): a refusal, e.g. too many
    // live pages open at once (429); say so rather than go quietly stale.
    if (source.readyState === EventSource.CLOSED) {
      say("Live updates stopped here (too many of your pages open at once?): close some and reload this one.");
    }
  });
  source.addEventListener("open", function () {
    part.classList.remove("stale");
  });
})();
