// The book theme expects <html data-mode="light|dark|auto">, which this Jupyter Book version does not write;
// without it the theme logs "Got invalid theme mode" on a reader's first visit. Start from the saved mode.
document.documentElement.dataset.mode = document.documentElement.dataset.mode || localStorage.getItem("mode") || "auto";
