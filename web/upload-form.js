// The upload form's picture field: a preview of the chosen file, a drop target, and the server's
// size limit, shown before sending and enforced here, so a too-large file is never uploaded.

export function formatMegabytes(bytes) {
  const mb = bytes / (1024 * 1024);
  return `${mb >= 10 ? Math.round(mb) : Math.round(mb * 10) / 10} MB`;
}

/** The reason a file cannot be sent, or null. `limit` is the server's max_upload_bytes (or null). */
export function fileProblem(file, limit) {
  if (!file) return null;
  if (file.type && !file.type.startsWith("image/")) return `“${file.name}” is not an image.`;
  if (limit && file.size > limit) {
    return `“${file.name}” is ${formatMegabytes(file.size)}; the server accepts pictures up to ${formatMegabytes(limit)}.`;
  }
  return null;
}

export function createPictureField({ input, zone, preview, limitText, onProblem }) {
  let limit = null;
  let url = null;

  function clearPreview() {
    if (url) URL.revokeObjectURL(url);
    url = null;
    preview.removeAttribute("src");
    preview.hidden = true;
  }

  function check() {
    const file = input.files[0];
    const problem = fileProblem(file, limit);
    onProblem(problem);
    if (!file || problem) {
      if (problem) input.value = "";
      clearPreview();
      return;
    }
    clearPreview();
    url = URL.createObjectURL(file);
    preview.src = url;
    preview.alt = `Preview of ${file.name}`;
    preview.hidden = false;
  }

  input.addEventListener("change", check);

  let depth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  zone.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.stopPropagation();
    depth = 0;
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (!file) return;
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    check();
  });

  return {
    setLimit(bytes) {
      limit = typeof bytes === "number" && bytes > 0 ? bytes : null;
      limitText.textContent = limit ? `Up to ${formatMegabytes(limit)}.` : "";
      if (input.files[0]) check();
    },
    get limit() {
      return limit;
    },
    reset() {
      input.value = "";
      clearPreview();
      onProblem(null);
    },
  };
}
