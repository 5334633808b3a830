// Copy buttons: a button with data-copy="ID" copies the text of the element with that id to the
// clipboard. The buttons stay hidden without this script (or without a clipboard); the text can
// always be selected and copied by hand.
for (const button of document.querySelectorAll('button[data-copy]')) {
  const target = document.getElementById(button.dataset.copy);
  if (!target || !navigator.clipboard) continue;
  const label = button.textContent;
  button.hidden = false;
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(target.textContent.trim());
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Not copied: select the text and copy it';
    }
    setTimeout(() => { button.textContent = label; }, 2500);
  });
}
