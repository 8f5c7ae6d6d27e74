// The messages list's counts per status, fetched once the list is shown: the list answers
// without them (counting every status is half of its time on Postgres), and this puts them in
// the placeholder the page leaves (nav.status-tabs[data-counts]). Again after auto-refresh has
// replaced the page's content (refresh.js sends "tracker:refreshed"). Without scripts, the
// placeholder's <noscript> link asks for the page with the counts in it.
(function () {
  "use strict";

  if (!window.fetch || !window.DOMParser) {
    return;
  }

  // The counts last shown and the URL they came from: after an auto-refresh of the same list
  // they stay in sight until the new ones arrive, instead of flickering to a placeholder.
  var lastUrl = null;
  var lastNav = null;

  function unavailable(place, why) {
    place.removeAttribute("aria-busy");
    var hint = place.querySelector(".counting");
    if (!hint) {
      hint = document.createElement("small");
      hint.className = "hint counting";
      place.appendChild(hint);
    }
    hint.textContent = "counts per status not available (" + why + ")";
  }

  function load(place) {
    var url = place.getAttribute("data-counts");
    place.removeAttribute("data-counts"); // once per placeholder
    if (url === lastUrl && lastNav) {
      var stale = lastNav.cloneNode(true);
      stale.setAttribute("aria-busy", "true");
      place.replaceWith(stale);
      place = stale;
    }
    window.fetch(url, {credentials: "same-origin", cache: "no-store",
                       headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/auth/login") >= 0) {
          window.location.reload(); // the session ended: show the login page
          return null;
        }
        // 400: a filter that was not applied as written; the page says so, the counts are
        // those of the filter as applied, like the list's.
        if (response.status >= 500 || response.status === 401 || response.status === 403) {
          throw new Error("the server answered " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var nav = fresh.querySelector("nav.status-tabs");
        if (!nav || !place.isConnected) {
          return; // a refresh replaced the page meanwhile: its own placeholder loads
        }
        var shown = document.importNode(nav, true);
        place.replaceWith(shown);
        lastUrl = url;
        lastNav = shown.cloneNode(true);
      })
      .catch(function (error) {
        unavailable(place, error.message);
      });
  }

  function loadAll() {
    var places = document.querySelectorAll("nav.status-tabs[data-counts]");
    for (var i = 0; i < places.length; i++) {
      load(places[i]);
    }
  }

  document.addEventListener("tracker:refreshed", loadAll);
  loadAll();
})();
