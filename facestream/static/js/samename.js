// A name somebody enrolled already has: the server asks (409 with reason "name") whether it
// is the same person. This asks the user, and sends the request again with the answer.

import { h, plural, shortHash } from "./dom.js";
import { ApiError } from "./api.js";
import { confirmDialog } from "./ui.js";

/**
 * `send(sameName)`, first with sameName undefined; when the name is taken, ask who this is
 * and send again with the answer (a person's hash, or "new"). Null when the user cancels.
 */
export async function withSameName(send) {
  try {
    return await send(undefined);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 409 || err.body.reason !== "name") throw err;
    const choice = await askSamePerson(err.body);
    return choice === null ? null : await send(choice);
  }
}

/** The 409's people of that name, each a choice, and "another person". */
async function askSamePerson(body) {
  const options = [
    ...body.people.map((p) => ({
      value: p.hash, thumb: p.thumbnail,
      label: `Yes, the same person: ${p.name} (${shortHash(p.hash)}, ${plural(p.samples, "sample")})`,
    })),
    { value: "new", label: `No, another person named ${body.name}` },
  ];
  const group = h("fieldset", { class: "choices", testid: "same-name" },
    h("legend", {}, `Is this ${body.name}?`),
    ...options.map((o) => h("label", { class: "choice" },
      h("input", { type: "radio", name: "same-name", value: o.value }),
      o.thumb ? h("img", { class: "thumb small", src: o.thumb, alt: "" }) : null,
      h("span", {}, o.label))));
  const ok = await confirmDialog({
    title: `${body.name} is enrolled already`,
    body: [`Somebody enrolled is called ${body.name}: is this them, or another person with the same name?`, group],
    confirm: "Continue",
    ready: () => group.querySelector("input:checked") !== null,
  });
  return ok ? group.querySelector("input:checked").value : null;
}
