// The facestream dashboard (index.html): the live view, adding faces, searching by photo,
// arrivals and departures, and three views below: the gallery (a page at a time), the visit
// history (a person's timeline when one is chosen) and the unknown visitors. Everything
// comes from the HTTP API and the /ws websocket (see README.md). Plain ES modules: no build
// step.
//
// One module per concern, each owning its state: live.js (the stream, who is in view),
// enroll.js (Add face), photosearch.js (who is in a photo, and their visits), events.js
// (arrivals and departures), gallery.js and samples.js, history.js and snapshot.js,
// unknowns.js, views.js (the tabs), cameras.js, socket.js, account.js; below them people.js
// (who a hash is, the person pickers), ui.js (notices, dialogs), api.js, time.js and dom.js.
// The one piece of state several of them share, which camera and which tab are shown, is
// state.js.
//
// The views call one another (a gallery card opens its history, the history reveals a
// card), so some imports go both ways. That is safe because importing a module only defines
// its functions and attaches its listeners to the page's static elements; everything that
// loads or renders starts here, once every module has been evaluated.

import { keepAgoCurrent } from "./time.js";
import { shown } from "./state.js";
import { renderInView, restartStream } from "./live.js";
import { renderEnrollChoices } from "./enroll.js";
import { loadEvents } from "./events.js";
import { refreshGallery } from "./gallery.js";
import { loadUnknowns } from "./unknowns.js";
import { showView } from "./views.js";
import { connect } from "./socket.js";
import { loadCameras } from "./cameras.js";
import { showAccount } from "./account.js";
import "./photosearch.js";  // its listeners only: it loads nothing until a photo comes

keepAgoCurrent();
setInterval(loadCameras, 5000);
showView(location.hash.slice(1));
restartStream();  // H.264 where it plays (player.js), else MJPEG
loadCameras();
renderInView();
renderEnrollChoices();
refreshGallery();
loadEvents();
loadUnknowns();
connect();
showAccount();
