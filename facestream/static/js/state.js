// What the page shows, which several modules read: the one piece of state they share.
// Everything else lives in the module of its concern.

/**
 * `camera`: the camera shown, null for the first one (as /streaming, /hash and /ws are);
 * written only by cameras.js. `view`: the tab shown ("gallery", "history" or "unknowns");
 * written only by views.js, null until it shows the first one.
 */
export const shown = {
  camera: new URLSearchParams(location.search).get("camera"),
  view: null,
};

/** The URL of `what` (streaming, hash, ws) for the camera shown. */
export const cameraPath = (what) =>
  (shown.camera ? `/cameras/${encodeURIComponent(shown.camera)}/${what}` : `/${what}`);
