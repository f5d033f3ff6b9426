// Every call the page makes to the server: the same HTTP API any client uses (OpenAI's, and the store's).
// Errors come back as ApiError, whose `status`, `code` and `param` are the server's; errorText() words them.

const KEY_ITEM = "gpts.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_ITEM),
  set: (key) => (key ? sessionStorage.setItem(KEY_ITEM, key) : sessionStorage.removeItem(KEY_ITEM)),
};

export class ApiError extends Error {
  // `error`: the server's whole error object, for the fields beyond OpenAI's (a refused file's `errors`).
  constructor(status, message, code = null, param = null, error = {}) {
    super(message);
    Object.assign(this, { name: "ApiError", status, code, param, error });
  }
}

const CONNECTION_LOST = () => new ApiError(0, "The connection to the server was lost.", "connection_lost");

function headers(json) {
  const out = json ? { "Content-Type": "application/json" } : {};
  const key = apiKey.get();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorOf(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch { /* not JSON: a proxy's page, say */ }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("gpts:unauthorized"));
  return new ApiError(response.status, error.message || `${response.status} ${response.statusText}`,
                      error.code, error.param, error);
}

async function send(path, { method, body, form, signal } = {}) {
  const json = body !== undefined;
  let response;
  try {
    response = await fetch(path, { method: method || (json || form ? "POST" : "GET"), signal,
                                   headers: headers(json), body: json ? JSON.stringify(body) : form });
  } catch (e) {
    throw e.name === "AbortError" ? e : CONNECTION_LOST();
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

// JSON in, JSON out: api("/v1/gpts"), api("/v1/gpts", {body: spec}), api(url, {method: "DELETE"}).
export async function api(path, options = {}) {
  const response = await send(path, options);
  return response.json();
}

// The models a server answers as, but its GPTs: /v1/models lists both, each GPT under its slug (/v1/gpts).
export async function plainModels() {
  const [models, gpts] = await Promise.all([api("/v1/models"), api("/v1/gpts")]);
  const slugs = new Set(gpts.data.map((g) => g.slug));
  return models.data.filter((m) => !slugs.has(m.id));
}

// A file to download (a .gpt bundle): the browser saves it under the server's name.
export async function download(path) {
  const response = await send(path);
  const name = /filename="?([^";]+)"?/.exec(response.headers.get("content-disposition") || "")?.[1] || "download";
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  return name;
}

// Server-sent events from a POST (a streamed chat completion, a tuning run): yields each `data:` object until
// [DONE]. An error object in the stream is thrown as ApiError; abort with `signal`.
export async function* events(path, body, { signal } = {}) {
  const response = await send(path, { body, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (true) {
      let read;
      try {
        read = await reader.read();
      } catch (e) {
        throw e.name === "AbortError" ? e : CONNECTION_LOST();
      }
      if (read.done) return;
      buffer += read.value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") return;
          const parsed = JSON.parse(data);
          if (parsed.error) {
            throw new ApiError(500, parsed.error.message, parsed.error.code, parsed.error.param);
          }
          yield parsed;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// A multipart upload with progress (fetch has none): onProgress(fraction) as the body goes out.
export function upload(path, form, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    const key = apiKey.get();
    if (key) request.setRequestHeader("Authorization", `Bearer ${key}`);
    request.responseType = "json";
    request.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    request.onerror = () => reject(CONNECTION_LOST());
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) return resolve(request.response);
      const error = request.response?.error || {};
      if (request.status === 401) window.dispatchEvent(new CustomEvent("gpts:unauthorized"));
      reject(new ApiError(request.status, error.message || `${request.status} ${request.statusText}`,
                          error.code, error.param, error));
    };
    request.send(form);
  });
}

// What to tell a person about a failed call: the server's message, with what to do where the status says it.
export function errorText(error) {
  if (!(error instanceof ApiError)) return `Something went wrong in the page: ${error.message || error}`;
  switch (error.status) {
    case 0: return "The connection to the server was lost. Check that gpts serve is still running, then retry.";
    case 401: return error.code === "invalid_api_key"
      ? "The server refused this API key. Enter another with the “API key” button at the top."
      : "This server needs an API key. Enter it with the “API key” button at the top.";
    case 413: return `Too large for this server: ${error.message}`;
    case 429: return error.message;  // the server's words: it is busy, and when to retry
    case 503: return `The server is not ready: ${error.message}`;
    default: return error.message;
  }
}
