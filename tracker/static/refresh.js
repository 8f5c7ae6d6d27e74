// Auto-refresh for the pages support keeps open while working a queue (the messages list, a
// message, the overview, the callbacks). Off until switched on; the choice is remembered per
// page in this browser (localStorage), so it survives paging, filtering and reloads.
//
// A refresh fetches the same URL (filters and page are in it) and swaps the <main> content in
// place, so the scroll position, the open raw callbacks and the control itself stay. It waits
// while the person is typing or choosing in a form, has changed a field without submitting it,
// or has text selected, and while the tab is hidden. No framework, nothing from elsewhere:
// the Content-Security-Policy allows scripts from this site only.
(function () {
  "use strict";

  var control = document.querySelector(".refresh[data-page]");
  if (!control || !window.fetch || !window.DOMParser) {
    return; // the page works as before, without the control
  }
  var select = control.querySelector("select");
  var state = control.querySelector(".refresh-state");
  var key = "tracker.refresh." + control.getAttribute("data-page");
  var CHOICES = ["0", "10", "30"];
  var timer = null;
  var due = 0; // when the next refresh is due (ms since the epoch); 0: off

  function stored() {
    try {
      var value = window.localStorage.getItem(key);
      return CHOICES.indexOf(value) >= 0 ? value : "0";
    } catch (e) {
      return "0"; // storage disabled: off, as by default
    }
  }

  function remember(value) {
    try {
      if (value === "0") {
        window.localStorage.removeItem(key);
      } else {
        window.localStorage.setItem(key, value);
      }
    } catch (e) {
      // storage disabled: the choice lasts for this page only
    }
  }

  function clock(when) {
    return when.toISOString().slice(11, 19) + " UTC"; // the pages show UTC times
  }

  function say(text) {
    state.textContent = text;
  }

  function isField(el) {
    if (!el) {
      return false;
    }
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  function changedFields(main) {
    var fields = main.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "hidden") {
        continue;
      }
      if (f.type === "checkbox" || f.type === "radio") {
        if (f.checked !== f.defaultChecked) {
          return true;
        }
      } else if (f.tagName === "SELECT") {
        if (f.selectedIndex !== defaultIndex(f)) {
          return true;
        }
      } else if (f.value !== f.defaultValue) {
        return true;
      }
    }
    return false;
  }

  // The option a select shows as the page came: the one marked selected, else the first.
  function defaultIndex(select) {
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].defaultSelected) {
        return i;
      }
    }
    return select.options.length ? 0 : -1;
  }

  // Why a refresh must wait now, or "" when it may go ahead.
  function busy() {
    var main = document.querySelector("main");
    var active = document.activeElement;
    if (isField(active) && active !== select && main.contains(active)) {
      return "paused while you type";
    }
    if (changedFields(main)) {
      return "paused: a form has changes not submitted";
    }
    var selection = window.getSelection ? window.getSelection() : null;
    if (selection && selection.toString().length > 0) {
      return "paused while text is selected";
    }
    if (document.hidden) {
      return "paused while this tab is hidden";
    }
    return "";
  }

  function openDetails(main) {
    var open = [];
    var all = main.querySelectorAll("details");
    for (var i = 0; i < all.length; i++) {
      if (all[i].open) {
        open.push(i);
      }
    }
    return open;
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var next = fresh.querySelector("main");
    if (!next) {
      return false;
    }
    var main = document.querySelector("main");
    var x = window.scrollX;
    var y = window.scrollY;
    var open = openDetails(main);
    main.replaceChildren.apply(main, Array.prototype.slice.call(next.childNodes));
    var details = main.querySelectorAll("details");
    for (var i = 0; i < open.length; i++) {
      if (details[open[i]]) {
        details[open[i]].open = true;
      }
    }
    if (fresh.title) {
      document.title = fresh.title;
    }
    window.scrollTo(x, y);
    // Parts of the page that load after it (counts.js) load again into the new content.
    document.dispatchEvent(new CustomEvent("tracker:refreshed"));
    return true;
  }

  function refresh() {
    var url = window.location.href;
    return window.fetch(url, {credentials: "same-origin", cache: "no-store",
                              headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/auth/login") >= 0) {
          window.location.reload(); // the session ended: show the login page
          return null;
        }
        // A page with a problem (400 for a filter that was not applied) is still the page.
        if (response.status >= 500) {
          throw new Error("the server answered " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html !== null && swap(html)) {
          say("updated " + clock(new Date()));
        }
      })
      .catch(function (error) {
        say("not updated at " + clock(new Date()) + " (" + error.message + "); trying again");
      });
  }

  function schedule(seconds) {
    window.clearTimeout(timer);
    due = seconds > 0 ? Date.now() + seconds * 1000 : 0;
    if (due) {
      timer = window.setTimeout(tick, seconds * 1000);
    }
  }

  function tick() {
    var seconds = Number(select.value);
    if (!seconds) {
      return;
    }
    var why = busy();
    if (why) {
      say(why);
      timer = window.setTimeout(tick, 1000); // look again shortly, refresh once it is clear
      return;
    }
    refresh().then(function () {
      if (Number(select.value) === seconds) {
        schedule(seconds);
      }
    });
  }

  function apply(value, fromUser) {
    remember(value);
    if (value === "0") {
      schedule(0);
      say(fromUser ? "off" : "");
    } else {
      schedule(Number(value));
      say("every " + value + " s");
    }
  }

  select.value = stored();
  select.addEventListener("change", function () {
    apply(select.value, true);
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && due && Date.now() >= due) {
      window.clearTimeout(timer);
      tick();
    }
  });
  control.hidden = false;
  apply(select.value, false);
})();
