// Starts Swagger UI on the page's OpenAPI document. A file of its own, not the inline
// script of Swagger UI's index.html: the page's Content-Security-Policy runs no inline code.
"use strict";

const root = document.getElementById("swagger-ui");

window.ui = SwaggerUIBundle({
  url: root.dataset.specUrl,
  domNode: root,
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  plugins: [SwaggerUIBundle.plugins.DownloadUrl],
  layout: "BaseLayout",
  // No badge from validator.swagger.io: the page talks to this host only.
  validatorUrl: null,
  // The pasted token stays in this page's memory: a reload forgets it.
  persistAuthorization: false,
});
