// Sign in with the OAuth2 password form; the token lives in sessionStorage (this tab only).
import { LANDING, api, explain, setToken, showPolicyFooter, token } from "./common.js";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

async function landIfSignedIn() {
  if (!token()) return;
  try {
    const me = await api("/auth/me");
    location.replace(LANDING[me.role] || "/login");
  } catch {
    setToken(null);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const data = new FormData(form);
  if (!data.get("username") || !data.get("password")) {
    error.textContent = "Enter your username and password.";
    return;
  }
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const answer = await api("/auth/token", { method: "POST", form: { username: data.get("username"), password: data.get("password") } });
    setToken(answer.access_token);
    location.assign(LANDING[answer.role] || "/login");
  } catch (err) {
    error.textContent = err.status === 401 ? "Wrong username or password." : explain(err, "Signing in");
    button.disabled = false;
  }
});

if (new URLSearchParams(location.search).has("expired")) {
  document.getElementById("login-note").textContent = "Your session ended. Sign in again.";
}
showPolicyFooter();
landIfSignedIn();
document.getElementById("username").focus();
