//! [`VmHandle`]: the typed actions of one VM, each a stateless HTTP request.

use agentvm_protocol::Value;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::Result;
use crate::types::{
    decode, int32, millis, strings, unexpected, CronJob, CronRun, DirEntry, ExecOptions, ExecResult, FileStat, Options,
    ProcessInfo, ProcessTreeNode, ShellOptions, SpawnOptions, SpawnedProcessInfo, StoredEvent,
};

/// One VM, addressed by its key (created on first use). Cheap to clone. Every method is one
/// stateless HTTP action; events need a [`Connection`] ([`VmHandle::connect`]).
///
/// Processes:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> agentvm_client::Result<()> {
/// # let _server = agentvm_client::testing::server();
/// use agentvm_client::{Client, Error};
///
/// let vm = Client::from_env().vm("processes");
/// let pid = vm.spawn("cat", &[], Default::default()).await?;
/// vm.write_process_stdin(pid, b"hello\n").await?;
/// vm.close_process_stdin(pid).await?;
/// assert_eq!(vm.wait_process(pid).await?, 0);
/// assert!(!vm.get_process(pid).await?.running);
///
/// match vm.get_process(999_999).await {
///     Err(Error::Api { code, message, .. }) => {
///         assert_eq!((code.as_str(), message.as_str()), ("process_not_found", "Process not found: 999999"))
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
///
/// Files (bytes in, bytes out; paths are absolute paths inside the VM):
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> agentvm_client::Result<()> {
/// # let _server = agentvm_client::testing::server();
/// use agentvm_client::Client;
///
/// let vm = Client::from_env().vm("files");
/// vm.mkdir("/home/user/notes", true).await?;
/// vm.write_file("/home/user/notes/todo.txt", b"ship it\n").await?;
/// assert_eq!(vm.read_file("/home/user/notes/todo.txt").await?, b"ship it\n");
/// assert_eq!(vm.readdir("/home/user/notes").await?, ["todo.txt"]);
/// assert_eq!(vm.stat("/home/user/notes/todo.txt").await?.size, 8);
///
/// // The VM's programs see the same files.
/// let r = vm.exec("wc -c < notes/todo.txt", Default::default()).await?;
/// assert_eq!(r.stdout.trim(), "8");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct VmHandle {
    client: Client,
    key: String,
}

impl VmHandle {
    pub(crate) fn new(client: Client, key: &str) -> VmHandle {
        VmHandle { client, key: key.to_owned() }
    }

    /// The VM's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Calls any action by name with positional arguments and returns its raw result
    /// (`Value::Undefined` or `Value::Null` for actions that return nothing).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> agentvm_client::Result<()> {
    /// # let _server = agentvm_client::testing::server();
    /// use agentvm_client::{Client, Value};
    ///
    /// let vm = Client::from_env().vm("raw");
    /// let out = vm.action("exec", vec![Value::from("echo hi")]).await?;
    /// assert_eq!(out.get("stdout").and_then(Value::as_str), Some("hi\n"));
    /// # Ok(()) }
    /// ```
    pub async fn action(&self, name: &str, args: Vec<Value>) -> Result<Value> {
        self.client.action(&self.key, name, &args).await
    }

    /// Runs `command` with `sh -c` and waits for it; output is captured.
    pub async fn exec(&self, command: &str, options: ExecOptions) -> Result<ExecResult> {
        let options = Options::default()
            .env(&options.env)
            .opt("cwd", options.cwd)
            .opt("stdin", options.stdin.map(Value::from))
            .opt("timeout", options.timeout.map(millis));
        let mut args = vec![Value::from(command)];
        if !options.is_empty() {
            args.push(options.into_value());
        }
        decode("exec", self.action("exec", args).await?)
    }

    /// Starts `command` with `args` (no shell) and returns its pid. Its output arrives as
    /// `processOutput` events and its end as `processExit`, on connections that subscribed.
    pub async fn spawn(&self, command: &str, args: &[String], options: SpawnOptions) -> Result<i32> {
        let options = Options::default().env(&options.env).opt("cwd", options.cwd);
        let out = self.action("spawn", vec![Value::from(command), strings(args), options.into_value()]).await?;
        match out.get("pid") {
            Some(pid) => int32("spawn", pid),
            None => Err(unexpected("spawn", "{pid}", &out)),
        }
    }

    pub async fn write_process_stdin(&self, pid: i32, data: &[u8]) -> Result<()> {
        self.action("writeProcessStdin", vec![Value::from(pid), Value::Bytes(data.to_vec().into())]).await.map(drop)
    }

    pub async fn close_process_stdin(&self, pid: i32) -> Result<()> {
        self.action("closeProcessStdin", vec![Value::from(pid)]).await.map(drop)
    }

    /// Waits for a spawned process to end; returns its exit code (128+signal for a signal death).
    pub async fn wait_process(&self, pid: i32) -> Result<i32> {
        int32("waitProcess", &self.action("waitProcess", vec![Value::from(pid)]).await?)
    }

    /// The processes started with `spawn` (running, and the last exited ones).
    pub async fn list_processes(&self) -> Result<Vec<SpawnedProcessInfo>> {
        decode("listProcesses", self.action("listProcesses", vec![]).await?)
    }

    pub async fn get_process(&self, pid: i32) -> Result<SpawnedProcessInfo> {
        decode("getProcess", self.action("getProcess", vec![Value::from(pid)]).await?)
    }

    /// SIGTERM to the process's group (exit code 143).
    pub async fn stop_process(&self, pid: i32) -> Result<()> {
        self.action("stopProcess", vec![Value::from(pid)]).await.map(drop)
    }

    /// SIGKILL to the process's group (exit code 137).
    pub async fn kill_process(&self, pid: i32) -> Result<()> {
        self.action("killProcess", vec![Value::from(pid)]).await.map(drop)
    }

    /// Every process of the VM, spawned or not (what `ps` inside shows).
    pub async fn all_processes(&self) -> Result<Vec<ProcessInfo>> {
        decode("allProcesses", self.action("allProcesses", vec![]).await?)
    }

    /// Every process of the VM as a tree (roots first).
    pub async fn process_tree(&self) -> Result<Vec<ProcessTreeNode>> {
        decode("processTree", self.action("processTree", vec![]).await?)
    }

    /// Opens an interactive shell on a terminal and returns its id (`shell-1`, ...). The
    /// terminal's output arrives as `shellData` events, its end as `shellExit`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> agentvm_client::Result<()> {
    /// # let _server = agentvm_client::testing::server();
    /// use agentvm_client::{Client, ShellOptions, Value};
    ///
    /// let vm = Client::from_env().vm("shells");
    /// let mut conn = vm.connect().await?;
    /// conn.subscribe("shellData").await?;
    ///
    /// let shell = vm.open_shell(ShellOptions { command: Some("sh".into()), ..Default::default() }).await?;
    /// vm.resize_shell(&shell, 120, 40).await?;
    /// vm.write_shell(&shell, b"echo $((6 * 7))\n").await?;
    ///
    /// let mut screen = Vec::new();
    /// while !String::from_utf8_lossy(&screen).contains("42") {
    ///     let event = conn.next_event().await.expect("connection open");
    ///     if let Some(Value::Bytes(data)) = event.payload.get("data") {
    ///         screen.extend_from_slice(data);
    ///     }
    /// }
    /// vm.close_shell(&shell).await?;
    /// vm.wait_shell(&shell).await?; // the exit code: a hung-up shell died of SIGHUP or SIGKILL
    /// # Ok(()) }
    /// ```
    pub async fn open_shell(&self, options: ShellOptions) -> Result<String> {
        let options = Options::default()
            .opt("command", options.command)
            .opt("args", options.args.as_deref().map(strings))
            .env(&options.env)
            .opt("cwd", options.cwd)
            .opt("cols", options.cols.map(u32::from))
            .opt("rows", options.rows.map(u32::from));
        let out = self.action("openShell", vec![options.into_value()]).await?;
        match out.get("shellId").and_then(Value::as_str) {
            Some(id) => Ok(id.to_owned()),
            None => Err(unexpected("openShell", "{shellId}", &out)),
        }
    }

    /// Types `data` into the shell's terminal (`\x03` is Ctrl-C, `\x04` Ctrl-D).
    pub async fn write_shell(&self, shell_id: &str, data: &[u8]) -> Result<()> {
        self.action("writeShell", vec![Value::from(shell_id), Value::Bytes(data.to_vec().into())]).await.map(drop)
    }

    pub async fn resize_shell(&self, shell_id: &str, cols: u16, rows: u16) -> Result<()> {
        let args = vec![Value::from(shell_id), Value::from(u32::from(cols)), Value::from(u32::from(rows))];
        self.action("resizeShell", args).await.map(drop)
    }

    /// Hangs the terminal up: SIGHUP to the shell's session, SIGKILL to what is left 500 ms later.
    pub async fn close_shell(&self, shell_id: &str) -> Result<()> {
        self.action("closeShell", vec![Value::from(shell_id)]).await.map(drop)
    }

    /// Waits for the shell to end; returns its exit code.
    pub async fn wait_shell(&self, shell_id: &str) -> Result<i32> {
        int32("waitShell", &self.action("waitShell", vec![Value::from(shell_id)]).await?)
    }

    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        match self.action("readFile", vec![Value::from(path)]).await? {
            Value::Bytes(bytes) => Ok(Vec::from(bytes)),
            Value::String(text) => Ok(text.into_bytes()),
            other => Err(unexpected("readFile", "bytes", &other)),
        }
    }

    /// Writes a whole file (durable when this returns). The parent directory must exist.
    pub async fn write_file(&self, path: &str, content: &[u8]) -> Result<()> {
        self.action("writeFile", vec![Value::from(path), Value::Bytes(content.to_vec().into())]).await.map(drop)
    }

    /// Creates a directory; with `recursive`, its missing parents too (and an existing
    /// directory is no error).
    pub async fn mkdir(&self, path: &str, recursive: bool) -> Result<()> {
        let options = Options::default().set("recursive", recursive).into_value();
        self.action("mkdir", vec![Value::from(path), options]).await.map(drop)
    }

    /// The names in a directory.
    pub async fn readdir(&self, path: &str) -> Result<Vec<String>> {
        decode("readdir", self.action("readdir", vec![Value::from(path)]).await?)
    }

    /// Everything below a directory, `max_depth` levels deep at most (unlimited when `None`).
    pub async fn readdir_recursive(&self, path: &str, max_depth: Option<u32>) -> Result<Vec<DirEntry>> {
        let options = Options::default().opt("maxDepth", max_depth).into_value();
        decode("readdirRecursive", self.action("readdirRecursive", vec![Value::from(path), options]).await?)
    }

    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        decode("stat", self.action("stat", vec![Value::from(path)]).await?)
    }

    pub async fn exists(&self, path: &str) -> Result<bool> {
        let out = self.action("exists", vec![Value::from(path)]).await?;
        out.as_bool().ok_or_else(|| unexpected("exists", "a boolean", &out))
    }

    /// Renames `from` to `to` (the `move` action).
    pub async fn move_path(&self, from: &str, to: &str) -> Result<()> {
        self.action("move", vec![Value::from(from), Value::from(to)]).await.map(drop)
    }

    /// Deletes a file, or a directory (with everything in it when `recursive`): the
    /// `deleteFile` action.
    pub async fn delete_path(&self, path: &str, recursive: bool) -> Result<()> {
        let options = Options::default().set("recursive", recursive).into_value();
        self.action("deleteFile", vec![Value::from(path), options]).await.map(drop)
    }

    /// The VM's durable event log: events with `seq > since` (from the oldest kept when `None`),
    /// `limit` at most (server default 1000, at most 10,000). Works while the VM sleeps.
    pub async fn get_vm_events(&self, since: Option<u64>, limit: Option<u32>) -> Result<Vec<StoredEvent>> {
        let options = Options::default().opt("since", since).opt("limit", limit).into_value();
        match self.action("getVmEvents", vec![options]).await? {
            Value::Array(items) => items.into_iter().map(StoredEvent::from_value).collect(),
            other => Err(unexpected("getVmEvents", "an array", &other)),
        }
    }

    /// Schedules a cron job (`scheduleCron`): `job` is `{id?, schedule, timezone?, action,
    /// overlap?}` as the server documents it; returns the job's id. Does not wake the VM.
    pub async fn schedule_cron(&self, job: serde_json::Value) -> Result<String> {
        let out = self.action("scheduleCron", vec![Value::from(job)]).await?;
        match out.get("id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_string()),
            None => Err(unexpected("scheduleCron", "{id}", &out)),
        }
    }

    /// The VM's cron jobs (`listCronJobs`). Works while the VM sleeps.
    pub async fn list_cron_jobs(&self) -> Result<Vec<CronJob>> {
        decode("listCronJobs", self.action("listCronJobs", vec![]).await?)
    }

    /// Cancels a cron job (`cancelCronJob`); an unknown id is not an error.
    pub async fn cancel_cron_job(&self, id: &str) -> Result<()> {
        self.action("cancelCronJob", vec![Value::from(id)]).await.map(drop)
    }

    /// The newest runs first (`listCronRuns`), of one job or of all, `limit` at most (server
    /// default 100, at most 1000). Works while the VM sleeps.
    pub async fn list_cron_runs(&self, job_id: Option<&str>, limit: Option<u32>) -> Result<Vec<CronRun>> {
        let job = job_id.map_or(Value::Null, Value::from);
        let options = Options::default().opt("limit", limit).into_value();
        decode("listCronRuns", self.action("listCronRuns", vec![job, options]).await?)
    }

    /// Stops the VM and deletes it with all its data. The same key later gets a fresh VM.
    pub async fn destroy(&self) -> Result<()> {
        self.action("destroy", vec![]).await.map(drop)
    }

    /// Opens a WebSocket connection to the VM (waits until the server accepted it), for events
    /// and actions. See [`Connection`].
    pub async fn connect(&self) -> Result<Connection> {
        Connection::open(self).await
    }
}
