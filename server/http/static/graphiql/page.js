// Starts GraphiQL against this server's /graphql. Served as a file so the page's
// Content-Security-Policy can forbid inline scripts.
//
// Headers are not persisted: the Authorization header usually holds an admin's JWT,
// which must not outlive the tab in the browser's localStorage. GraphiQL's
// shouldPersistHeaders=false covers its tabs but not its query history, which
// stores each run's headers, so the storage handed to GraphiQL drops them.
"use strict";

(function () {
  var NAMESPACE = "graphiql:";
  // What GraphiQL keeps as JSON lists of runs or tabs, each with its headers.
  var RECORDS = [NAMESPACE + "queries", NAMESPACE + "favorites", NAMESPACE + "tabState"];

  function withoutHeaders(value) {
    try {
      return JSON.stringify(
        JSON.parse(value, function (key, item) {
          return key === "headers" ? undefined : item;
        }),
      );
    } catch (error) {
      return value;
    }
  }

  var storage = {
    getItem: function (key) {
      return localStorage.getItem(key);
    },
    setItem: function (key, value) {
      if (key === NAMESPACE + "headers") {
        return;
      }
      localStorage.setItem(key, RECORDS.indexOf(key) >= 0 ? withoutHeaders(value) : value);
    },
    removeItem: function (key) {
      localStorage.removeItem(key);
    },
    get length() {
      return Object.keys(localStorage).filter(function (key) {
        return key.indexOf(NAMESPACE) === 0;
      }).length;
    },
    clear: function () {
      Object.keys(localStorage).forEach(function (key) {
        if (key.indexOf(NAMESPACE) === 0) {
          localStorage.removeItem(key);
        }
      });
    },
  };

  var HEADERS_TEMPLATE = '{\n  "Authorization": "Bearer <token>"\n}';
  var DEFAULT_QUERY = [
    "# ghvault GraphiQL.",
    "#",
    "# Put a bearer token in the Headers pane below, as JSON:",
    '#   {"Authorization": "Bearer <token>"}',
    "# then run the query with Ctrl-Enter or the play button.",
    "",
    "{",
    "  viewer {",
    "    id",
    "    role",
    "  }",
    "}",
    "",
  ].join("\n");

  var url = window.location.origin + window.location.pathname;
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: url }),
      storage: storage,
      defaultQuery: DEFAULT_QUERY,
      headers: HEADERS_TEMPLATE,
      defaultHeaders: HEADERS_TEMPLATE,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: "headers",
      inputValueDeprecation: true,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
    }),
  );
})();
