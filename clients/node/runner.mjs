// Shared entry logic for the version directories: picks the scenario named by SCENARIO and runs
// it with the client the version's run.mjs imported from its own node_modules (bare specifiers
// resolve relative to the importing file, so each version must import rivetkit itself).
//
//   ENDPOINT=http://127.0.0.1:PORT ENCODING=bare KEY=test [SCENARIO=seed|multiplayer|files|bulk|preview|cron|...] node <version>/run.mjs

const SCENARIOS = {
	seed: "./seed-examples.mjs",
	multiplayer: "./multiplayer.mjs",
	files: "./files.mjs",
	bulk: "./bulk-output.mjs",
	"subscribe-first": "./subscribe-first.mjs",
	presets: "./presets.mjs",
	sessions: "./sessions.mjs",
	preview: "./preview.mjs",
	cron: "./cron.mjs",
};

export async function main(createClient, version) {
	const scenario = process.env.SCENARIO || "seed";
	if (!SCENARIOS[scenario]) {
		console.error(`unknown SCENARIO ${scenario}; expected one of ${Object.keys(SCENARIOS).join(", ")}`);
		process.exit(1);
	}
	const options = {
		endpoint: process.env.ENDPOINT,
		encoding: process.env.ENCODING || "bare",
		key: process.env.KEY || "test",
		otherKey: process.env.OTHER_KEY,
	};
	process.stderr.write(`${JSON.stringify({ rivetkit: version, scenario, ...options })}\n`);
	const { run } = await import(new URL(SCENARIOS[scenario], import.meta.url));
	await run({ createClient, version, ...options });
}
