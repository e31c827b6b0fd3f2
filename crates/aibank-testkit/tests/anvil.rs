//! The anvil helper and the test ERC-20 on a real node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aibank_testkit::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use serde_json::json;

#[tokio::test]
async fn the_test_token_transfers_logs_and_reverts_like_an_erc20() {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    assert_eq!(
        anvil.rpc("eth_chainId", json!([])).await,
        json!(format!("0x{CHAIN_BASE_SEPOLIA:x}"))
    );
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    let accounts = anvil.accounts().await;
    let (alice, bob) = (&accounts[0], &accounts[1]);
    anvil.mint(USDC_BASE_SEPOLIA, alice, 5_000_000).await;
    let data = "0x313ce567";
    let decimals = anvil
        .rpc(
            "eth_call",
            json!([{"to": USDC_BASE_SEPOLIA, "data": data}, "latest"]),
        )
        .await;
    assert_eq!(
        u64::from_str_radix(&decimals.as_str().unwrap()[2..], 16).unwrap(),
        6
    );

    let hash = anvil
        .transfer(USDC_BASE_SEPOLIA, alice, bob, 1_250_000)
        .await;
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash])).await;
    assert_eq!(receipt["status"], "0x1");
    let log = &receipt["logs"][0];
    assert_eq!(log["address"], USDC_BASE_SEPOLIA);
    assert_eq!(
        log["topics"][0],
        "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    );
    assert!(log["topics"][1].as_str().unwrap().ends_with(&alice[2..]));
    assert!(log["topics"][2].as_str().unwrap().ends_with(&bob[2..]));
    assert_eq!(
        u128::from_str_radix(&log["data"].as_str().unwrap()[2..], 16).unwrap(),
        1_250_000
    );
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, alice).await, 3_750_000);
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, bob).await, 1_250_000);

    // More than the balance: mined, reverted, nothing moved, no log.
    let hash = anvil
        .transfer(USDC_BASE_SEPOLIA, bob, alice, 1_250_001)
        .await;
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash])).await;
    assert_eq!(receipt["status"], "0x0");
    assert_eq!(receipt["logs"], json!([]));
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, bob).await, 1_250_000);
}

#[tokio::test]
async fn a_stopped_node_refuses_connections_and_resumes_with_its_chain() {
    let mut anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    let accounts = anvil.accounts().await;
    anvil.mint(USDC_BASE_SEPOLIA, &accounts[0], 10).await;
    let hash = anvil
        .transfer(USDC_BASE_SEPOLIA, &accounts[0], &accounts[1], 4)
        .await;
    let state = anvil.stop().await;
    assert!(reqwest::get(&anvil.url).await.is_err(), "the port refuses");
    anvil.resume(state).await;
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash])).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, &accounts[1]).await, 4);
}
