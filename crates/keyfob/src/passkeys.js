// Keyfob's passkey forms. A form with `data-passkey="register"` or `"sign-in"` carries the options
// of a ceremony the server started (`data-options`, JSON); on submit this calls the browser's
// WebAuthn API with them, puts the credential's JSON in the form's `credential` field and submits
// the form, which the server verifies. Without JavaScript or WebAuthn the form says so.
(function () {
  "use strict";

  function setStatus(form, text) {
    var status = form.querySelector("[data-passkey-status]");
    if (status) {
      status.textContent = text;
    }
  }

  function wire(form) {
    var mode = form.getAttribute("data-passkey");
    var output = form.querySelector('input[name="credential"]');
    var button = form.querySelector('button[type="submit"]');
    if (!window.PublicKeyCredential || !PublicKeyCredential.parseCreationOptionsFromJSON) {
      setStatus(form, "This browser does not support passkeys.");
      if (button) {
        button.disabled = true;
      }
      return;
    }
    if (button) {
      button.disabled = false;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var options = JSON.parse(form.getAttribute("data-options"));
      var publicKey = options.publicKey || options;
      var call;
      if (mode === "register") {
        call = navigator.credentials.create({
          publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(publicKey),
        });
      } else {
        call = navigator.credentials.get({
          publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(publicKey),
        });
      }
      setStatus(form, "Waiting for your passkey…");
      call.then(
        function (credential) {
          output.value = JSON.stringify(credential.toJSON());
          form.submit();
        },
        function (err) {
          setStatus(
            form,
            "The passkey was not used (" + err.name + ": " + err.message + "). Reload the page to try again."
          );
        }
      );
    });
  }

  var forms = document.querySelectorAll("form[data-passkey]");
  for (var i = 0; i < forms.length; i++) {
    wire(forms[i]);
  }
})();
