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

  // The schema (for the Docs pane and completion) needs a token, so GraphiQL is given
  // none (`null`: it does not introspect, so no error greets a visitor) until the Headers
  // pane holds one; then it is fetched with those headers, and again when they change.
  var HINTS = {
    none: "Docs and completion: put a bearer token in the Headers pane.",
    loading: "Loading the schema with the token in the Headers pane...",
    refused: "The token in the Headers pane was refused: paste a valid one to load the schema.",
    loaded: "",
  };
  var INTROSPECTION = GraphiQL.GraphQL.getIntrospectionQuery({ inputValueDeprecation: true });
  var url = window.location.origin + window.location.pathname;
  var fetcher = GraphiQL.createFetcher({ url: url });
  var explorer = GraphiQLPluginExplorer.explorerPlugin();
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  var schema = null;
  var hint = "none";
  var introspectedWith = null;
  var pending = null;

  function bearerHeaders(text) {
    try {
      var headers = JSON.parse(text);
      var authorization = headers && headers.Authorization;
      var real = typeof authorization === "string" && authorization.indexOf("<token>") < 0;
      return real && /^Bearer\s+\S+$/.test(authorization) ? headers : null;
    } catch (error) {
      return null;
    }
  }

  function introspect(text) {
    var headers = bearerHeaders(text);
    var key = headers ? headers.Authorization : null;
    if (key === introspectedWith) {
      return;
    }
    introspectedWith = key;
    if (!headers) {
      schema = null;
      hint = "none";
      render();
      return;
    }
    hint = "loading";
    render();
    Promise.resolve(
      fetcher({ query: INTROSPECTION, operationName: "IntrospectionQuery" }, { headers: headers }),
    ).then(
      function (result) {
        if (introspectedWith !== key) {
          return; // the headers changed meanwhile
        }
        var loaded = result && result.data && result.data.__schema;
        schema = loaded ? result.data : null;
        hint = loaded ? "loaded" : "refused";
        render();
      },
      function () {
        if (introspectedWith === key) {
          hint = "refused";
          render();
        }
      },
    );
  }

  function onEditHeaders(text) {
    // Once typing pauses, not at every keystroke.
    clearTimeout(pending);
    pending = setTimeout(function () {
      introspect(text);
    }, 300);
  }

  function render() {
    root.render(
      React.createElement(
        GraphiQL,
        {
          fetcher: fetcher,
          schema: schema,
          storage: storage,
          defaultQuery: DEFAULT_QUERY,
          headers: HEADERS_TEMPLATE,
          defaultHeaders: HEADERS_TEMPLATE,
          onEditHeaders: onEditHeaders,
          isHeadersEditorEnabled: true,
          shouldPersistHeaders: false,
          defaultEditorToolsVisibility: "headers",
          inputValueDeprecation: true,
          plugins: [explorer],
        },
        React.createElement(
          GraphiQL.Footer,
          null,
          React.createElement("p", { className: "ghvault-schema-hint" }, HINTS[hint]),
        ),
      ),
    );
  }

  render();
})();
