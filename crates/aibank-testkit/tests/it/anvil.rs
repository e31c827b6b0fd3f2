//! The anvil helper, the test ERC-20 and the EIP-3009 token on a real node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aibank_testkit::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use alloy::primitives::{keccak256, uint, Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol;
use alloy::sol_types::{eip712_domain, Eip712Domain, SolCall, SolStruct};
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

// --- the EIP-3009 token -------------------------------------------------------------------

sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
    struct CancelAuthorization {
        address authorizer;
        bytes32 nonce;
    }

    function name() external view returns (string);
    function symbol() external view returns (string);
    function decimals() external view returns (uint8);
    function totalSupply() external view returns (uint256);
    function approve(address spender, uint256 value) external returns (bool);
    function allowance(address owner, address spender) external view returns (uint256);
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function DOMAIN_SEPARATOR() external view returns (bytes32);
    function TRANSFER_WITH_AUTHORIZATION_TYPEHASH() external view returns (bytes32);
    function RECEIVE_WITH_AUTHORIZATION_TYPEHASH() external view returns (bytes32);
    function CANCEL_AUTHORIZATION_TYPEHASH() external view returns (bytes32);
    function transferWithAuthorization(
        address from, address to, uint256 value, uint256 validAfter, uint256 validBefore,
        bytes32 nonce, uint8 v, bytes32 r, bytes32 s
    ) external;
    function receiveWithAuthorization(
        address from, address to, uint256 value, uint256 validAfter, uint256 validBefore,
        bytes32 nonce, uint8 v, bytes32 r, bytes32 s
    ) external;
    function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)
        external;
}

/// secp256k1's group order.
const CURVE_ORDER: U256 =
    uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);

const USED: &str = "FiatTokenV2: authorization is used or canceled";
const INVALID_SIGNATURE: &str = "FiatTokenV2: invalid signature";

fn hex_of(a: Address) -> String {
    format!("{a:#x}")
}

fn data(call: &impl SolCall) -> String {
    format!("0x{}", hex::encode(call.abi_encode()))
}

fn token() -> Address {
    USDC_BASE_SEPOLIA.parse().unwrap()
}

fn domain() -> Eip712Domain {
    eip712_domain! {
        name: "USDC",
        version: "2",
        chain_id: CHAIN_BASE_SEPOLIA,
        verifying_contract: token(),
    }
}

/// `(v, r, s)` of a signature over `hash`, `v` as 27 or 28.
fn sign(signer: &PrivateKeySigner, hash: B256) -> (u8, B256, B256) {
    let sig = signer.sign_hash_sync(&hash).unwrap();
    (sig.v_byte(), sig.r().into(), sig.s().into())
}

/// The call that submits `auth` with the signature `(v, r, s)`.
fn submit(auth: &TransferWithAuthorization, (v, r, s): (u8, B256, B256)) -> String {
    data(&transferWithAuthorizationCall {
        from: auth.from,
        to: auth.to,
        value: auth.value,
        validAfter: auth.validAfter,
        validBefore: auth.validBefore,
        nonce: auth.nonce,
        v,
        r,
        s,
    })
}

fn signed(signer: &PrivateKeySigner, auth: &TransferWithAuthorization) -> String {
    submit(auth, sign(signer, auth.eip712_signing_hash(&domain())))
}

async fn latest_timestamp(anvil: &Anvil) -> u64 {
    let block = anvil
        .rpc("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    u64::from_str_radix(&block["timestamp"].as_str().unwrap()[2..], 16).unwrap()
}

/// A node with the token at the Base Sepolia USDC address and a payer (a key of the test's
/// own, never an account of the node) holding 10 USDC.
async fn token_with_payer() -> (Anvil, PrivateKeySigner) {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_eip3009(USDC_BASE_SEPOLIA).await;
    let payer = PrivateKeySigner::random();
    anvil
        .mint_eip3009(USDC_BASE_SEPOLIA, &hex_of(payer.address()), 10_000_000)
        .await;
    (anvil, payer)
}

async fn read<C: SolCall>(anvil: &Anvil, call: &C) -> C::Return {
    let from = anvil.accounts().await.remove(0);
    let out = anvil
        .call(&from, USDC_BASE_SEPOLIA, &data(call))
        .await
        .unwrap();
    C::abi_decode_returns(&hex::decode(&out[2..]).unwrap()).unwrap()
}

#[tokio::test]
async fn the_eip3009_token_is_an_erc20_named_usdc_with_six_decimals() {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_eip3009(USDC_BASE_SEPOLIA).await;
    let accounts = anvil.accounts().await;
    let (alice, bob, carol) = (&accounts[0], &accounts[1], &accounts[2]);
    assert_eq!(read(&anvil, &nameCall {}).await, "USDC");
    assert_eq!(read(&anvil, &symbolCall {}).await, "USDC");
    assert_eq!(read(&anvil, &decimalsCall {}).await, 6);
    assert_eq!(read(&anvil, &totalSupplyCall {}).await, U256::ZERO);

    anvil
        .mint_eip3009(USDC_BASE_SEPOLIA, alice, 5_000_000)
        .await;
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, alice).await, 5_000_000);
    assert_eq!(
        read(&anvil, &totalSupplyCall {}).await,
        U256::from(5_000_000)
    );

    let hash = anvil
        .transfer(USDC_BASE_SEPOLIA, alice, bob, 1_250_000)
        .await;
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash])).await;
    assert_eq!(receipt["status"], "0x1");
    let log = &receipt["logs"][0];
    assert_eq!(
        log["topics"][0],
        json!(keccak256("Transfer(address,address,uint256)").to_string())
    );
    assert!(log["topics"][1].as_str().unwrap().ends_with(&alice[2..]));
    assert!(log["topics"][2].as_str().unwrap().ends_with(&bob[2..]));
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, alice).await, 3_750_000);
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, bob).await, 1_250_000);

    let bob_addr: Address = bob.parse().unwrap();
    let carol_addr: Address = carol.parse().unwrap();
    let too_much = data(&transferCall {
        to: carol_addr,
        value: U256::from(1_250_001),
    });
    assert_eq!(
        anvil.call(bob, USDC_BASE_SEPOLIA, &too_much).await,
        Err("ERC20: transfer amount exceeds balance".into())
    );
    let to_nobody = data(&transferCall {
        to: Address::ZERO,
        value: U256::from(1),
    });
    assert_eq!(
        anvil.call(bob, USDC_BASE_SEPOLIA, &to_nobody).await,
        Err("ERC20: transfer to the zero address".into())
    );

    // An allowance is spent by transferFrom, and no further.
    let approve = data(&approveCall {
        spender: bob_addr,
        value: U256::from(1_000_000),
    });
    assert_eq!(
        anvil.send(alice, USDC_BASE_SEPOLIA, &approve).await["status"],
        "0x1"
    );
    let alice_addr: Address = alice.parse().unwrap();
    let pull = |value: u64| {
        data(&transferFromCall {
            from: alice_addr,
            to: carol_addr,
            value: U256::from(value),
        })
    };
    assert_eq!(
        anvil.send(bob, USDC_BASE_SEPOLIA, &pull(600_000)).await["status"],
        "0x1"
    );
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, carol).await, 600_000);
    let left = allowanceCall {
        owner: alice_addr,
        spender: bob_addr,
    };
    assert_eq!(read(&anvil, &left).await, U256::from(400_000));
    assert_eq!(
        anvil.call(bob, USDC_BASE_SEPOLIA, &pull(400_001)).await,
        Err("ERC20: transfer amount exceeds allowance".into())
    );
}

#[tokio::test]
async fn a_transfer_authorization_moves_tokens_once_whoever_submits_it() {
    let (anvil, payer) = token_with_payer().await;
    let accounts = anvil.accounts().await;
    let (relayer, recipient) = (&accounts[1], &accounts[2]);
    let from = hex_of(payer.address());

    let separator = read(&anvil, &DOMAIN_SEPARATORCall {}).await;
    assert_eq!(separator, domain().separator());
    let auth = TransferWithAuthorization {
        from: payer.address(),
        to: recipient.parse().unwrap(),
        value: U256::from(2_500_000),
        validAfter: U256::ZERO,
        validBefore: U256::from(latest_timestamp(&anvil).await + 3600),
        nonce: keccak256("first payment"),
    };
    assert_eq!(
        read(&anvil, &TRANSFER_WITH_AUTHORIZATION_TYPEHASHCall {}).await,
        auth.eip712_type_hash()
    );
    let hash = auth.eip712_signing_hash(&domain());
    let (v, r, s) = sign(&payer, hash);

    // Signatures that must not pass: over another value, by another key, the high-s twin
    // of the right one (it recovers the same key), and a `v` outside 27/28.
    let tampered = TransferWithAuthorization {
        value: U256::from(2_500_001),
        ..auth.clone()
    };
    let bad = [
        submit(&tampered, (v, r, s)),
        signed(&PrivateKeySigner::random(), &auth),
        submit(
            &auth,
            (55 - v, r, (CURVE_ORDER - U256::from_be_bytes(s.0)).into()),
        ),
        submit(&auth, (v - 27, r, s)),
        submit(&auth, (v + 2, r, s)),
    ];
    for call in &bad {
        assert_eq!(
            anvil.call(relayer, USDC_BASE_SEPOLIA, call).await,
            Err(INVALID_SIGNATURE.into())
        );
    }
    assert!(
        !anvil
            .authorization_state(USDC_BASE_SEPOLIA, &from, &auth.nonce.to_string())
            .await
    );

    let call = submit(&auth, (v, r, s));
    let receipt = anvil.send(relayer, USDC_BASE_SEPOLIA, &call).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let logs = receipt["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{receipt}");
    assert_eq!(
        logs[0]["topics"],
        json!([
            keccak256("AuthorizationUsed(address,bytes32)").to_string(),
            B256::left_padding_from(payer.address().as_slice()).to_string(),
            auth.nonce.to_string(),
        ])
    );
    assert_eq!(
        logs[1]["topics"][0],
        json!(keccak256("Transfer(address,address,uint256)").to_string())
    );
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, &from).await, 7_500_000);
    assert_eq!(
        anvil.balance_of(USDC_BASE_SEPOLIA, recipient).await,
        2_500_000
    );
    assert!(
        anvil
            .authorization_state(USDC_BASE_SEPOLIA, &from, &auth.nonce.to_string())
            .await
    );

    // The same authorization again, from anyone: refused, and nothing moves.
    assert_eq!(
        anvil.call(recipient, USDC_BASE_SEPOLIA, &call).await,
        Err(USED.into())
    );
    let replay = anvil.send(relayer, USDC_BASE_SEPOLIA, &call).await;
    assert_eq!(replay["status"], "0x0");
    assert_eq!(
        anvil.balance_of(USDC_BASE_SEPOLIA, recipient).await,
        2_500_000
    );
}

#[tokio::test]
async fn an_authorization_is_refused_outside_its_window_whose_bounds_are_exclusive() {
    let (anvil, payer) = token_with_payer().await;
    let accounts = anvil.accounts().await;
    let (relayer, recipient) = (&accounts[1], &accounts[2]);
    let now = latest_timestamp(&anvil).await;
    let auth = |valid_after: u64, valid_before: u64, nonce: &str| TransferWithAuthorization {
        from: payer.address(),
        to: recipient.parse().unwrap(),
        value: U256::from(1_000_000),
        validAfter: U256::from(valid_after),
        validBefore: U256::from(valid_before),
        nonce: keccak256(nonce),
    };

    let early = signed(&payer, &auth(now + 1000, now + 2000, "early"));
    assert_eq!(
        anvil.call(relayer, USDC_BASE_SEPOLIA, &early).await,
        Err("FiatTokenV2: authorization is not yet valid".into())
    );
    let late = signed(&payer, &auth(0, now - 1, "late"));
    assert_eq!(
        anvil.call(relayer, USDC_BASE_SEPOLIA, &late).await,
        Err("FiatTokenV2: authorization is expired".into())
    );

    // Mined in a block whose timestamp is exactly a bound: refused at either bound, accepted
    // one second inside both.
    let at = |t: u64, a: TransferWithAuthorization| {
        let anvil = &anvil;
        let call = signed(&payer, &a);
        async move {
            anvil.rpc("evm_setNextBlockTimestamp", json!([t])).await;
            anvil.send(relayer, USDC_BASE_SEPOLIA, &call).await["status"].clone()
        }
    };
    let t = now + 100;
    assert_eq!(at(t, auth(t, t + 1000, "at validAfter")).await, "0x0");
    let t = t + 10;
    assert_eq!(at(t, auth(t - 1000, t, "at validBefore")).await, "0x0");
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, recipient).await, 0);
    let t = t + 10;
    assert_eq!(at(t, auth(t - 1, t + 1, "just inside")).await, "0x1");
    assert_eq!(
        anvil.balance_of(USDC_BASE_SEPOLIA, recipient).await,
        1_000_000
    );
}

#[tokio::test]
async fn only_the_payee_can_submit_a_receive_authorization() {
    let (anvil, payer) = token_with_payer().await;
    let accounts = anvil.accounts().await;
    let (relayer, recipient) = (&accounts[1], &accounts[2]);
    let valid_before = U256::from(latest_timestamp(&anvil).await + 3600);

    let receive = ReceiveWithAuthorization {
        from: payer.address(),
        to: recipient.parse().unwrap(),
        value: U256::from(3_000_000),
        validAfter: U256::ZERO,
        validBefore: valid_before,
        nonce: keccak256("receive"),
    };
    assert_eq!(
        read(&anvil, &RECEIVE_WITH_AUTHORIZATION_TYPEHASHCall {}).await,
        receive.eip712_type_hash()
    );
    let receive_call = |(v, r, s): (u8, B256, B256)| {
        data(&receiveWithAuthorizationCall {
            from: receive.from,
            to: receive.to,
            value: receive.value,
            validAfter: receive.validAfter,
            validBefore: receive.validBefore,
            nonce: receive.nonce,
            v,
            r,
            s,
        })
    };
    let call = receive_call(sign(&payer, receive.eip712_signing_hash(&domain())));
    assert_eq!(
        anvil.call(relayer, USDC_BASE_SEPOLIA, &call).await,
        Err("FiatTokenV2: caller must be the payee".into())
    );
    // A transfer authorization over the same fields is another message: it cannot be used
    // to receive.
    let as_transfer = TransferWithAuthorization {
        from: receive.from,
        to: receive.to,
        value: receive.value,
        validAfter: receive.validAfter,
        validBefore: receive.validBefore,
        nonce: receive.nonce,
    };
    let wrong_kind = receive_call(sign(&payer, as_transfer.eip712_signing_hash(&domain())));
    assert_eq!(
        anvil.call(recipient, USDC_BASE_SEPOLIA, &wrong_kind).await,
        Err(INVALID_SIGNATURE.into())
    );
    let receipt = anvil.send(recipient, USDC_BASE_SEPOLIA, &call).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(
        anvil.balance_of(USDC_BASE_SEPOLIA, recipient).await,
        3_000_000
    );
    assert_eq!(
        anvil.call(recipient, USDC_BASE_SEPOLIA, &call).await,
        Err(USED.into())
    );
}

#[tokio::test]
async fn a_canceled_authorization_cannot_be_used_nor_canceled_again() {
    let (anvil, payer) = token_with_payer().await;
    let accounts = anvil.accounts().await;
    let (relayer, recipient) = (&accounts[1], &accounts[2]);
    let from = hex_of(payer.address());
    let valid_before = U256::from(latest_timestamp(&anvil).await + 3600);
    let auth = TransferWithAuthorization {
        from: payer.address(),
        to: recipient.parse().unwrap(),
        value: U256::from(1_000_000),
        validAfter: U256::ZERO,
        validBefore: valid_before,
        nonce: keccak256("canceled"),
    };
    let transfer = signed(&payer, &auth);
    let cancel = CancelAuthorization {
        authorizer: payer.address(),
        nonce: auth.nonce,
    };
    assert_eq!(
        read(&anvil, &CANCEL_AUTHORIZATION_TYPEHASHCall {}).await,
        cancel.eip712_type_hash()
    );
    let cancel_call = |signer: &PrivateKeySigner| {
        let (v, r, s) = sign(signer, cancel.eip712_signing_hash(&domain()));
        data(&cancelAuthorizationCall {
            authorizer: cancel.authorizer,
            nonce: cancel.nonce,
            v,
            r,
            s,
        })
    };
    assert_eq!(
        anvil
            .call(
                relayer,
                USDC_BASE_SEPOLIA,
                &cancel_call(&PrivateKeySigner::random())
            )
            .await,
        Err(INVALID_SIGNATURE.into())
    );
    let canceled = anvil
        .send(relayer, USDC_BASE_SEPOLIA, &cancel_call(&payer))
        .await;
    assert_eq!(canceled["status"], "0x1", "{canceled}");
    assert_eq!(
        canceled["logs"][0]["topics"],
        json!([
            keccak256("AuthorizationCanceled(address,bytes32)").to_string(),
            B256::left_padding_from(payer.address().as_slice()).to_string(),
            auth.nonce.to_string(),
        ])
    );
    assert!(
        anvil
            .authorization_state(USDC_BASE_SEPOLIA, &from, &auth.nonce.to_string())
            .await
    );
    assert_eq!(
        anvil.call(relayer, USDC_BASE_SEPOLIA, &transfer).await,
        Err(USED.into())
    );
    assert_eq!(
        anvil
            .call(relayer, USDC_BASE_SEPOLIA, &cancel_call(&payer))
            .await,
        Err(USED.into())
    );
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, recipient).await, 0);
}
