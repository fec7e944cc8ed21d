// Files scenario: the filesystem actions through the real client, as the reference's tables
// describe them. Binary content must round-trip exactly in every encoding.
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import { check, disposeBounded, done, expectReject, errSummary, installGuards, normalizeOptions } from "./harness.mjs";

export async function run(options) {
	installGuards({ timeoutMs: Number(process.env.TIMEOUT_MS) || 60000 });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const client = options.createClient({ endpoint, encoding });
	const agent = client.vm.getOrCreate([key]);
	const home = "/home/user/files-test";

	await check("binary_round_trip", async () => {
		const bytes = new Uint8Array(256).map((_, i) => i);
		await agent.mkdir(home, { recursive: true });
		await agent.writeFile(`${home}/all-bytes.bin`, bytes);
		const back = await agent.readFile(`${home}/all-bytes.bin`);
		assert.ok(back instanceof Uint8Array, `readFile must return a Uint8Array, got ${Object.prototype.toString.call(back)}`);
		assert.deepEqual(Array.from(back), Array.from(bytes));
		await agent.writeFile(`${home}/empty`, new Uint8Array(0));
		assert.equal((await agent.readFile(`${home}/empty`)).length, 0);
		return { bytes: back.length };
	});

	await check("exec_and_files_agree", async () => {
		await agent.exec(`echo from-exec > ${home}/by-exec.txt`);
		assert.equal(new TextDecoder().decode(await agent.readFile(`${home}/by-exec.txt`)), "from-exec\n");
		await agent.writeFile(`${home}/by-api.txt`, "from the API\n");
		const r = await agent.exec(`cat ${home}/by-api.txt`);
		assert.equal(r.stdout, "from the API\n");
	});

	await check("write_files_and_read_files", async () => {
		const written = await agent.writeFiles([
			{ path: `${home}/deep/a/b/one.txt`, content: "1" },
			{ path: `${home}/deep/two.bin`, content: new Uint8Array([2, 2]) },
			{ path: "relative/path", content: "x" },
		]);
		assert.deepEqual(written.map((w) => w.success), [true, true, false]);
		assert.match(written[2].error, /EINVAL/);
		const read = await agent.readFiles([`${home}/deep/a/b/one.txt`, `${home}/nope`]);
		assert.equal(new TextDecoder().decode(read[0].content), "1");
		assert.equal(read[1].content, null);
		assert.match(read[1].error, /ENOENT/);
	});

	await check("readdir_and_recursive", async () => {
		const names = await agent.readdir(`${home}/deep`);
		assert.deepEqual(names, ["a", "two.bin"]);
		const all = await agent.readdirRecursive(`${home}/deep`);
		assert.deepEqual(
			all.map((e) => [e.path, e.type]),
			[
				[`${home}/deep/a`, "directory"],
				[`${home}/deep/two.bin`, "file"],
				[`${home}/deep/a/b`, "directory"],
				[`${home}/deep/a/b/one.txt`, "file"],
			],
		);
		assert.equal(all.find((e) => e.path.endsWith("two.bin")).size, 2);
		const shallow = await agent.readdirRecursive(`${home}/deep`, { maxDepth: 0 });
		assert.deepEqual(shallow.map((e) => e.path), [`${home}/deep/a`, `${home}/deep/two.bin`]);
		const excluded = await agent.readdirRecursive(`${home}/deep`, { exclude: ["a"] });
		assert.deepEqual(excluded.map((e) => e.path), [`${home}/deep/two.bin`]);
	});

	await check("stat_and_exists", async () => {
		const file = await agent.stat(`${home}/deep/two.bin`);
		assert.equal(file.isDirectory, false);
		assert.equal(file.isSymbolicLink, false);
		assert.equal(file.size, 2);
		assert.equal(file.uid, 1000);
		assert.equal(file.mode & 0o170000, 0o100000);
		assert.ok(file.mtimeMs > 1.6e12);
		const dir = await agent.stat(`${home}/deep`);
		assert.equal(dir.isDirectory, true);
		assert.equal(await agent.exists(`${home}/deep`), true);
		assert.equal(await agent.exists(`${home}/missing`), false);
	});

	await check("move_and_delete", async () => {
		await agent.move(`${home}/by-api.txt`, `${home}/moved.txt`);
		assert.equal(await agent.exists(`${home}/by-api.txt`), false);
		assert.equal(new TextDecoder().decode(await agent.readFile(`${home}/moved.txt`)), "from the API\n");
		await agent.move(`${home}/deep`, "/tmp/deep-moved");
		assert.deepEqual(await agent.readdir("/tmp/deep-moved"), ["a", "two.bin"]);
		const notEmpty = await expectReject(agent.deleteFile("/tmp/deep-moved"), "deleting a non-empty directory");
		assert.match(notEmpty.message, /ENOTEMPTY/);
		await agent.deleteFile("/tmp/deep-moved", { recursive: true });
		assert.equal(await agent.exists("/tmp/deep-moved"), false);
		await agent.deleteFile(`${home}/moved.txt`);
		assert.equal(await agent.exists(`${home}/moved.txt`), false);
	});

	await check("errors_name_the_posix_code", async () => {
		const missing = await expectReject(agent.readFile(`${home}/none`), "reading a missing file");
		assert.match(missing.message, /^ENOENT: /);
		const dir = await expectReject(agent.readFile(home), "reading a directory");
		assert.match(dir.message, /^EISDIR: /);
		const exists = await expectReject(agent.mkdir(home), "mkdir of an existing directory");
		assert.match(exists.message, /^EEXIST: /);
		const escape = await expectReject(agent.readFile("/../../etc/shadow"), "reading /etc/shadow");
		assert.match(escape.message, /^ENOENT: /);
		return { missing: errSummary(missing) };
	});

	await disposeBounded([client]);
	done();
}
