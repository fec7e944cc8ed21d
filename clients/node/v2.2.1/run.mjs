// Entry point for rivetkit@2.2.1. Bare specifiers resolve relative to the importing file, so
// "rivetkit/client" is imported here (this directory's node_modules) and handed to the shared
// scenario module.
//
//   ENDPOINT=http://127.0.0.1:PORT ENCODING=bare KEY=test [SCENARIO=seed|multiplayer|files] node run.mjs
import { createClient } from "rivetkit/client";

const SCENARIOS = { seed: "../seed-examples.mjs", multiplayer: "../multiplayer.mjs", files: "../files.mjs" };
const scenario = process.env.SCENARIO || "seed";
if (!SCENARIOS[scenario]) {
	console.error(`unknown SCENARIO ${scenario}; expected one of ${Object.keys(SCENARIOS).join(", ")}`);
	process.exit(1);
}
process.stderr.write(`${JSON.stringify({ rivetkit: "2.2.1", scenario, endpoint: process.env.ENDPOINT, encoding: process.env.ENCODING || "bare", key: process.env.KEY || "test" })}\n`);
const { run } = await import(new URL(SCENARIOS[scenario], import.meta.url));
await run({
	createClient,
	endpoint: process.env.ENDPOINT,
	encoding: process.env.ENCODING || "bare",
	key: process.env.KEY || "test",
	otherKey: process.env.OTHER_KEY,
});
