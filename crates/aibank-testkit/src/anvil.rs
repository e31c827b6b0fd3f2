//! A real `anvil` node for on-chain tests, and two tokens to place at the real USDC address:
//! a minimal ERC-20 assembled here, and an EIP-3009 token (`contracts/Eip3009Token.sol`)
//! that behaves like Circle's FiatTokenV2 for signed-authorization transfers.
//!
//! The binary comes from the npm registry (`@foundry-rs/anvil-linux-amd64`, installed by
//! `scripts/install-anvil`); `AIBANK_ANVIL` names another one.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// USDC on Base and on Base Sepolia.
pub const USDC_BASE: &str = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913";
pub const USDC_BASE_SEPOLIA: &str = "0x036cbd53842c5426634e7929541ec2318f3dcf7e";
pub const CHAIN_BASE: u64 = 8453;
pub const CHAIN_BASE_SEPOLIA: u64 = 84532;

/// Runtime bytecode (hex) of `contracts/Eip3009Token.sol`, written by
/// `scripts/build-contracts`, which `scripts/test` runs with `--check` so it cannot drift
/// from the source.
pub const EIP3009_RUNTIME: &str = include_str!("../contracts/Eip3009Token.bin-runtime");

/// Where the binary is: `AIBANK_ANVIL`, the repository's npm install, or `PATH`.
pub fn anvil_bin() -> PathBuf {
    if let Ok(p) = std::env::var("AIBANK_ANVIL") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if local.exists() {
        return local;
    }
    PathBuf::from("anvil")
}

/// One anvil process on a port of its own, auto-mining every transaction.
pub struct Anvil {
    pub url: String,
    pub chain_id: u64,
    port: u16,
    child: Option<Child>,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A 32-byte big-endian word of `hex` (an address or a number in hex, `0x` optional).
fn word(hex: &str) -> String {
    format!("{:0>64}", hex.trim_start_matches("0x"))
}

impl Anvil {
    /// Starts a node with `chain_id` and waits until it answers.
    pub async fn start(chain_id: u64) -> Anvil {
        let mut a = Anvil {
            url: String::new(),
            chain_id,
            port: 0,
            child: None,
            client: reqwest::Client::new(),
        };
        // The port was free when picked, but anything on the machine (an outgoing
        // connection's ephemeral port, another test's server) may take it before anvil
        // binds it: then anvil exits at once, and another port is tried.
        for _ in 0..5 {
            a.port = free_port();
            a.url = format!("http://127.0.0.1:{}", a.port);
            if a.spawn().await {
                return a;
            }
        }
        panic!("anvil could not start on any of five ports");
    }

    /// Starts the process on `self.port`; true once it listens there, false if it exited
    /// first (its port was taken). Panics if it does neither within 20 s.
    ///
    /// anvil says `Listening on …` only after its own bind succeeded, so an answer from
    /// whatever else holds the port (another test's node) is never taken for ours.
    async fn spawn(&mut self) -> bool {
        let bin = anvil_bin();
        let mut child = Command::new(&bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--chain-id",
                &self.chain_id.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start anvil ({}): {e}; run scripts/install-anvil",
                    bin.display()
                )
            });
        let stdout = child.stdout.take().expect("anvil's stdout is piped");
        let (listening, listens) = std::sync::mpsc::channel();
        // Read to the end: after the banner anvil logs a line per request, and a full
        // pipe would stall it.
        std::thread::spawn(move || {
            let mut listening = Some(listening);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("Listening on") {
                    if let Some(tx) = listening.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if listens.try_recv().is_ok() {
                self.child = Some(child);
                return true;
            }
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("anvil did not start listening on {}", self.url);
    }

    /// Stops the node, keeping its chain: the RPC port refuses connections until
    /// [`Anvil::resume`].
    pub async fn stop(&mut self) -> Value {
        let state = self.rpc("anvil_dumpState", json!([])).await;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        state
    }

    /// Starts the node again on the same port with the chain [`Anvil::stop`] returned.
    pub async fn resume(&mut self, state: Value) {
        // Same port (the server under test keeps its URL): wait for it to be free again.
        let mut tries = 0;
        while !self.spawn().await {
            tries += 1;
            assert!(tries < 50, "anvil could not take back port {}", self.port);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let loaded = self.rpc("anvil_loadState", json!([state])).await;
        assert_eq!(loaded, json!(true), "anvil_loadState");
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let res = self
            .client
            .post(&self.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = res.json().await.map_err(|e| e.to_string())?;
        if let Some(err) = body.get("error") {
            return Err(err.to_string());
        }
        Ok(body["result"].clone())
    }

    /// A JSON-RPC call that must succeed.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// The node's unlocked development accounts.
    pub async fn accounts(&self) -> Vec<String> {
        self.rpc("eth_accounts", json!([]))
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_lowercase())
            .collect()
    }

    /// Places the test ERC-20 at `address` (the real USDC address, or any other).
    pub async fn deploy_erc20(&self, address: &str) {
        let code = format!("0x{}", hex::encode(erc20_runtime()));
        self.rpc("anvil_setCode", json!([address, code])).await;
    }

    /// Sets `holder`'s token balance (base units) directly in the token's storage.
    pub async fn mint(&self, token: &str, holder: &str, amount: u128) {
        let slot = format!("0x{}", word(holder));
        let value = format!("0x{}", word(&format!("{amount:x}")));
        self.rpc("anvil_setStorageAt", json!([token, slot, value]))
            .await;
    }

    /// `from` (an unlocked account) sends `transfer(to, amount)` to `token`; returns once it
    /// is mined.
    /// The gas is fixed, so a transfer that reverts is still mined (with status 0).
    /// Gives `address` `wei` of ETH and `amount` of the ERC-20 at `token`.
    pub async fn fund(&self, address: &str, wei: u128, token: &str, amount: u128) {
        self.rpc("anvil_setBalance", json!([address, format!("0x{wei:x}")]))
            .await;
        self.mint(token, address, amount).await;
    }

    pub async fn transfer(&self, token: &str, from: &str, to: &str, amount: u128) -> String {
        let data = format!("0xa9059cbb{}{}", word(to), word(&format!("{amount:x}")));
        let tx = json!({"from": from, "to": token, "data": data, "gas": "0x30000"});
        let hash = self
            .rpc("eth_sendTransaction", json!([tx]))
            .await
            .as_str()
            .unwrap()
            .to_owned();
        self.wait_mined(&hash).await;
        hash
    }

    /// Waits until `hash` has a receipt (automining happens just after the send returns).
    pub async fn wait_mined(&self, hash: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self
                .rpc("eth_getTransactionReceipt", json!([hash]))
                .await
                .is_null()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{hash} was not mined");
    }

    /// The token balance of `holder`, read through the contract.
    pub async fn balance_of(&self, token: &str, holder: &str) -> u128 {
        let data = format!("0x70a08231{}", word(holder));
        let out = self
            .rpc("eth_call", json!([{"to": token, "data": data}, "latest"]))
            .await;
        u128::from_str_radix(out.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    /// Places the EIP-3009 token at `address`. Its domain separator follows the node's chain
    /// id and `address`, so the same code serves any chain and any address.
    pub async fn deploy_eip3009(&self, address: &str) {
        let code = format!("0x{}", EIP3009_RUNTIME.trim());
        self.rpc("anvil_setCode", json!([address, code])).await;
    }

    /// Mints `amount` base units of the EIP-3009 token for `holder` through the contract's
    /// own `mint`, so the total supply and the `Transfer` log are those of a real issue
    /// (its balances live in a mapping, which [`Anvil::mint`] cannot write).
    pub async fn mint_eip3009(&self, token: &str, holder: &str, amount: u128) {
        let data = format!("0x40c10f19{}{}", word(holder), word(&format!("{amount:x}")));
        let minter = self.accounts().await.remove(0);
        let receipt = self.send(&minter, token, &data).await;
        assert_eq!(receipt["status"], "0x1", "mint: {receipt}");
    }

    /// Whether the EIP-3009 authorization of `authorizer` with `nonce` (32 bytes in hex) is
    /// used or canceled.
    pub async fn authorization_state(&self, token: &str, authorizer: &str, nonce: &str) -> bool {
        let data = format!("0xe94a0102{}{}", word(authorizer), word(nonce));
        let out = self
            .call(authorizer, token, &data)
            .await
            .unwrap_or_else(|e| panic!("authorizationState: {e}"));
        match out.trim_start_matches("0x").trim_start_matches('0') {
            "" => false,
            "1" => true,
            other => panic!("authorizationState returned {other}"),
        }
    }

    /// `from` (an unlocked account) sends `data` to `to`; returns the receipt once it is
    /// mined. The gas is fixed, so a call that reverts is still mined (with status 0)
    /// instead of being refused at estimation.
    pub async fn send(&self, from: &str, to: &str, data: &str) -> Value {
        let tx = json!({"from": from, "to": to, "data": data, "gas": "0x100000"});
        let hash = self.rpc("eth_sendTransaction", json!([tx])).await;
        let hash = hash.as_str().unwrap();
        self.wait_mined(hash).await;
        self.rpc("eth_getTransactionReceipt", json!([hash])).await
    }

    /// `eth_call` of `data` on `to` as `from`, on the latest block: the returned data in hex,
    /// or, when it reverts, the revert reason (the `Error(string)` message, or the node's
    /// whole error when it carries none).
    pub async fn call(&self, from: &str, to: &str, data: &str) -> Result<String, String> {
        let tx = json!({"from": from, "to": to, "data": data});
        let res = self
            .client
            .post(&self.url)
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [tx, "latest"]}),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("eth_call: {e}"));
        let body: Value = res.json().await.unwrap_or_else(|e| panic!("eth_call: {e}"));
        match body.get("error") {
            None => Ok(body["result"].as_str().unwrap().to_owned()),
            Some(err) => Err(err["data"]
                .as_str()
                .and_then(revert_reason)
                .unwrap_or_else(|| err.to_string())),
        }
    }

    /// Mines `n` empty blocks.
    pub async fn mine(&self, n: u64) {
        self.rpc("anvil_mine", json!([format!("0x{n:x}")])).await;
    }

    /// Moves the chain's clock forward and mines a block at the new time.
    pub async fn advance_time(&self, secs: u64) {
        self.rpc("evm_increaseTime", json!([secs])).await;
        self.mine(1).await;
    }

    /// An EIP-191 `personal_sign` by an unlocked account over the raw bytes of `hex_message`.
    pub async fn sign(&self, account: &str, hex_message: &str) -> String {
        self.rpc("eth_sign", json!([account, hex_message]))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The message of revert data that is an ABI-encoded `Error(string)`.
fn revert_reason(data_hex: &str) -> Option<String> {
    let data = hex::decode(data_hex.trim_start_matches("0x")).ok()?;
    let body = data.strip_prefix(&[0x08, 0xc3, 0x79, 0xa0][..])?;
    // A word that must hold an offset or a length: anything above 64 bits is malformed.
    let usize_at = |i: usize| -> Option<usize> {
        let w = body.get(i..i.checked_add(32)?)?;
        if w[..24].iter().any(|&b| b != 0) {
            return None;
        }
        usize::try_from(u64::from_be_bytes(w[24..].try_into().ok()?)).ok()
    };
    let offset = usize_at(0)?;
    let len = usize_at(offset)?;
    let start = offset.checked_add(32)?;
    let message = body.get(start..start.checked_add(len)?)?;
    String::from_utf8(message.to_vec()).ok()
}

/// Runtime code of a minimal ERC-20 with 6 decimals: `transfer(address,uint256)` (reverts
/// when the balance is short, emits `Transfer`), `balanceOf(address)`, `decimals()`.
/// Balances live at storage slot = the holder's address, so tests mint with
/// `anvil_setStorageAt`.
pub fn erc20_runtime() -> Vec<u8> {
    use Asm::{Label, Op, Push, PushLabel};
    const TRANSFER_TOPIC: &str = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
    let h = |s: &str| hex::decode(s).unwrap();
    let program = vec![
        // selector = calldata[0..4]
        Push(vec![0x00]),
        Op(CALLDATALOAD),
        Push(vec![0xe0]),
        Op(SHR),
        Op(DUP1),
        Push(h("a9059cbb")),
        Op(EQ),
        PushLabel("transfer"),
        Op(JUMPI),
        Op(DUP1),
        Push(h("70a08231")),
        Op(EQ),
        PushLabel("balance_of"),
        Op(JUMPI),
        Op(DUP1),
        Push(h("313ce567")),
        Op(EQ),
        PushLabel("decimals"),
        Op(JUMPI),
        Label("fail"),
        Push(vec![0x00]),
        Op(DUP1),
        Op(REVERT),
        // transfer(to, amount)                         stack, top first
        Label("transfer"),
        Push(vec![0x04]),
        Op(CALLDATALOAD), //                            to
        Push(vec![0x24]),
        Op(CALLDATALOAD), //                            amount, to
        Op(CALLER),
        Op(SLOAD), //                                   bal, amount, to
        Op(DUP2),
        Op(DUP2),
        Op(LT), //                                      bal < amount, bal, amount, to
        PushLabel("fail"),
        Op(JUMPI), //                                   bal, amount, to
        Op(DUP2),
        Op(SWAP1),
        Op(SUB), //                                     bal - amount, amount, to
        Op(CALLER),
        Op(SSTORE), //                                  amount, to
        Op(DUP2),
        Op(SLOAD), //                                   bal_to, amount, to
        Op(DUP2),
        Op(ADD),
        Op(DUP3),
        Op(SSTORE), //                                  amount, to
        Push(vec![0x00]),
        Op(MSTORE), //                                  to          mem[0] = amount
        Op(CALLER),
        Push(h(TRANSFER_TOPIC)),
        Push(vec![0x20]),
        Push(vec![0x00]),
        Op(LOG3), //                                    Transfer(caller, to, amount)
        Push(vec![0x01]),
        Push(vec![0x00]),
        Op(MSTORE),
        Push(vec![0x20]),
        Push(vec![0x00]),
        Op(RETURN), //                                  true
        // balanceOf(holder)
        Label("balance_of"),
        Push(vec![0x04]),
        Op(CALLDATALOAD),
        Op(SLOAD),
        Push(vec![0x00]),
        Op(MSTORE),
        Push(vec![0x20]),
        Push(vec![0x00]),
        Op(RETURN),
        // decimals()
        Label("decimals"),
        Push(vec![0x06]),
        Push(vec![0x00]),
        Op(MSTORE),
        Push(vec![0x20]),
        Push(vec![0x00]),
        Op(RETURN),
    ];
    assemble(&program)
}

const ADD: u8 = 0x01;
const SUB: u8 = 0x03;
const LT: u8 = 0x10;
const EQ: u8 = 0x14;
const SHR: u8 = 0x1c;
const CALLER: u8 = 0x33;
const CALLDATALOAD: u8 = 0x35;
const MSTORE: u8 = 0x52;
const SLOAD: u8 = 0x54;
const SSTORE: u8 = 0x55;
const JUMPI: u8 = 0x57;
const JUMPDEST: u8 = 0x5b;
const PUSH1: u8 = 0x60;
const PUSH2: u8 = 0x61;
const DUP1: u8 = 0x80;
const DUP2: u8 = 0x81;
const DUP3: u8 = 0x82;
const SWAP1: u8 = 0x90;
const LOG3: u8 = 0xa3;
const RETURN: u8 = 0xf3;
const REVERT: u8 = 0xfd;

enum Asm {
    Op(u8),
    Push(Vec<u8>),
    /// `PUSH2` of a label's offset.
    PushLabel(&'static str),
    /// A `JUMPDEST` other code jumps to.
    Label(&'static str),
}

/// Two passes: lay out the code (labels become `JUMPDEST`s, label pushes `PUSH2`), then
/// fill in the label offsets.
fn assemble(program: &[Asm]) -> Vec<u8> {
    let mut labels = std::collections::HashMap::new();
    let mut at = 0usize;
    for item in program {
        match item {
            Asm::Op(_) | Asm::Label(_) => {
                if let Asm::Label(name) = item {
                    labels.insert(*name, at);
                }
                at += 1;
            }
            Asm::Push(bytes) => at += 1 + bytes.len(),
            Asm::PushLabel(_) => at += 3,
        }
    }
    let mut code = Vec::with_capacity(at);
    for item in program {
        match item {
            Asm::Op(op) => code.push(*op),
            Asm::Label(_) => code.push(JUMPDEST),
            Asm::Push(bytes) => {
                assert!((1..=32).contains(&bytes.len()));
                code.push(PUSH1 + u8::try_from(bytes.len() - 1).unwrap());
                code.extend_from_slice(bytes);
            }
            Asm::PushLabel(name) => {
                let off = u16::try_from(labels[name]).unwrap();
                code.push(PUSH2);
                code.extend_from_slice(&off.to_be_bytes());
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_detected_and_another_one_used() {
        // Something else holds the port anvil is told to use: it must not be mistaken
        // for the node, and `start` must end up on a port of its own.
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = Anvil {
            url: String::new(),
            chain_id: CHAIN_BASE_SEPOLIA,
            port: taken.local_addr().unwrap().port(),
            child: None,
            client: reqwest::Client::new(),
        };
        a.url = format!("http://127.0.0.1:{}", a.port);
        assert!(!a.spawn().await);
        assert!(a.child.is_none());
        let b = Anvil::start(CHAIN_BASE_SEPOLIA).await;
        assert_eq!(
            b.rpc("eth_chainId", json!([])).await,
            json!(format!("{CHAIN_BASE_SEPOLIA:#x}"))
        );
        // Another node on the port answers every probe: still not ours.
        a.port = b.port;
        a.url.clone_from(&b.url);
        assert!(!a.spawn().await);
        assert!(a.child.is_none());
    }
}
