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
  source.addEventListener("error", function () {
    part.classList.add("stale");
  });
  source.addEventListener("open", function () {
    part.classList.remove("stale");
  });
})();
