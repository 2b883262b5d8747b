// A modal yes/no question (the confirm dialog of index.html); focus starts on Cancel and goes
// back to where it was.

/** Resolve true when the user confirms, false when they cancel or press Escape. */
export function confirmAction({ title, text, confirmLabel }) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  const opener = document.activeElement;
  dialog.returnValue = "cancel";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === "confirm");
    }, { once: true });
    dialog.showModal();
  });
}
