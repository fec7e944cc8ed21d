// Entry point for rivetkit@2.3.19: imports "rivetkit/client" from this directory's node_modules and
// hands it to the shared runner (see ../runner.mjs for the environment it reads).
import { createClient } from "rivetkit/client";
import { main } from "../runner.mjs";

await main(createClient, "2.3.19");
