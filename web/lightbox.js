// The zoomed picture: a modal <dialog>, so the browser keeps focus inside it (the page behind is
// inert) and Escape closes it; Tab cycles inside it; focus then returns to the control that opened it.

export function createLightbox(dialog) {
  const image = dialog.querySelector("img");
  const closeButton = dialog.querySelector("button");
  let opener = null;

  function close() {
    if (dialog.open) dialog.close();
  }

  dialog.addEventListener("close", () => {
    image.removeAttribute("src");
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });
  // a click on the backdrop or on the picture closes it, as on most sites
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog || event.target === image) close();
  });
  closeButton.addEventListener("click", close);
  // Tab cycles inside the dialog: focus never leaves for the inert page or the browser's own bar
  dialog.addEventListener("keydown", (event) => {
    if (event.key !== "Tab") return;
    const focusable = [...dialog.querySelectorAll("button, [href], [tabindex]:not([tabindex='-1'])")];
    if (!focusable.length) return;
    const index = focusable.indexOf(document.activeElement);
    const next = event.shiftKey ? index - 1 : index + 1;
    event.preventDefault();
    focusable[(next + focusable.length) % focusable.length].focus();
  });

  return {
    open(src, alt, from) {
      opener = from || document.activeElement;
      image.src = src;
      image.alt = alt || "";
      dialog.showModal();
      closeButton.focus();
    },
    close,
    get isOpen() {
      return dialog.open;
    },
  };
}

/** Marks an image as upscaled (at least twice its pixels) so CSS draws it crisp, not blurred. */
export function markUpscaled(image) {
  const check = (tries = 0) => {
    const width = image.getBoundingClientRect().width;
    if (!width) {
      // loaded before it was laid out (a card not yet in the page): look again next frame
      if (tries < 60) requestAnimationFrame(() => check(tries + 1));
      return;
    }
    const drawn = width * (window.devicePixelRatio || 1);
    image.classList.toggle("upscaled", image.naturalWidth > 0 && image.naturalWidth * 2 <= drawn);
  };
  if (image.complete && image.naturalWidth) check();
  image.addEventListener("load", () => check());
}
