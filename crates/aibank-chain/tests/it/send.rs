//! The transaction sender on a real node, driven the way a caller other than wallets
//! drives it: its own key, its own nonce record, a contract call built by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aibank_chain::{
    abi_call, Address, Call, Chain, ChainRpc, PrivateKeySigner, RpcError, SendError, TxRecord,
    B256, U256,
};
use aibank_testkit::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use serde_json::json;

/// Nonces and hashes in memory: enough for one key in one process.
#[derive(Default)]
struct Memory {
    next: u64,
    hashes: Vec<B256>,
}

impl TxRecord for Memory {
    type Error = std::convert::Infallible;

    async fn take_nonce(&mut self, chain_nonce: u64) -> Result<u64, Self::Error> {
        let nonce = self.next.max(chain_nonce);
        self.next = nonce + 1;
        Ok(nonce)
    }

    async fn signed(&mut self, hash: B256) -> Result<(), Self::Error> {
        self.hashes.push(hash);
        Ok(())
    }
}

#[tokio::test]
async fn contract_calls_are_sent_with_the_callers_key_and_nonces() {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x42)).unwrap();
    let from = format!("{:#x}", signer.address());
    let one_eth = format!("0x{:x}", 10u128.pow(18));
    anvil.rpc("anvil_setBalance", json!([from, one_eth])).await;
    anvil.mint(USDC_BASE_SEPOLIA, &from, 5_000_000).await;
    let usdc = Chain::BaseSepolia.default_usdc();
    let rpc = ChainRpc::new(Chain::BaseSepolia, &anvil.url, usdc, Duration::from_secs(5)).unwrap();
    let to = Address::repeat_byte(0x0b);
    let mut record = Memory::default();

    let first = rpc
        .send(
            &signer,
            &Call::erc20_transfer(usdc, to, U256::from(1_000_000u64)),
            &mut record,
        )
        .await
        .unwrap();
    let input = abi_call(
        [0xa9, 0x05, 0x9c, 0xbb],
        &[to.into_word(), B256::from(U256::from(250_000u64))],
    );
    let second = rpc
        .send(&signer, &Call::contract(usdc, input), &mut record)
        .await
        .unwrap();
    assert_eq!((first.nonce, second.nonce), (0, 1));
    assert_eq!(record.hashes, vec![first.hash, second.hash]);
    for sent in [first, second] {
        let mined = rpc
            .wait_mined(sent.hash, Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert!(mined.success);
    }
    assert_eq!(
        anvil
            .balance_of(USDC_BASE_SEPOLIA, &format!("{to:#x}"))
            .await,
        1_250_000
    );

    // A call that reverts in estimation is never signed, recorded or broadcast.
    let too_much = Call::erc20_transfer(usdc, to, U256::from(10_000_000u64));
    match rpc.send(&signer, &too_much, &mut record).await {
        Err(SendError::NotSent(RpcError::Rejected { .. })) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(record.hashes.len(), 2);
    assert_eq!(rpc.pending_nonce(signer.address()).await.unwrap(), 2);
}
