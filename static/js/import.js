// The import form posts as usual (the page keeps running until the answer arrives); meanwhile its
// progress bar polls the server with htmx. Started here because htmx cancels a submit it listens to.
document.addEventListener("submit", (event) => {
  if (event.target.id !== "import-form") return;
  const bar = document.getElementById("import-progress");
  if (bar && window.htmx) window.htmx.trigger(bar, "import-started");
});
