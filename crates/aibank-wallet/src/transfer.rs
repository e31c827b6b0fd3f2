//! The transfer flow: check, record, take a nonce, sign, broadcast, await.
//!
//! Statuses as stored: `sending` (recorded; maybe signed and broadcast, not yet known),
//! `pending` (broadcast, not mined yet), `confirmed` (mined and succeeded), `failed`
//! (refused before broadcast, rejected by the node, or reverted: nothing moved). The API
//! shows `sending` as `pending`.

use aibank_chain::{Call, ChainRpc, RpcError, SendError, TxRecord, B256};
use aibank_core::ids::new_id;
use aibank_core::Usd;
use aibank_ledger::limits::TRANSFER_FAILED;
use aibank_store::models::{Wallet, WalletTransfer, TRANSFER_CONFIRMED as CONFIRMED};
use aibank_store::repo::wallets;
use aibank_store::{is_unique_violation, AnyConnection, StoreError, TxStop};
use alloy::primitives::{Address, U256};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::{keys, Chain, Currency, WalletError, Wallets};

const SENDING: &str = "sending";
const PENDING: &str = "pending";
const REVERTED: &str = "the transaction reverted on chain: nothing was transferred";

pub(crate) fn public_status(stored: &str) -> &str {
    if stored == SENDING {
        PENDING
    } else {
        stored
    }
}

/// A validated transfer request.
#[derive(Debug, Clone)]
pub struct TransferSpec {
    pub chain: Chain,
    pub to: Address,
    pub currency: Currency,
    /// As the client wrote it.
    pub amount: String,
    /// In the token's smallest unit.
    pub base_units: U256,
    pub usd: Usd,
}

/// A transfer's `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> WalletError {
    WalletError::Invalid {
        field,
        message: message.into(),
    }
}

/// A positive decimal string with at most `decimals` fractional digits, in base units.
fn parse_amount(text: &str, decimals: u32, currency: &str) -> Result<U256, WalletError> {
    let bad = || {
        invalid(
            "amount",
            format!(
                "`amount` must be a positive decimal string such as \"1.5\", with at most {decimals} decimal places for {currency}"
            ),
        )
    };
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if text.len() > 80
        || int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    if frac.len() > decimals as usize {
        return Err(invalid(
            "amount",
            format!(
                "`amount` has {} decimal places; {currency} has {decimals}",
                frac.len()
            ),
        ));
    }
    let digits = format!("{int}{frac:0<width$}", width = decimals as usize);
    let value = U256::from_str_radix(&digits, 10).map_err(|_| bad())?;
    if value.is_zero() {
        return Err(invalid("amount", "`amount` must be greater than zero"));
    }
    Ok(value)
}

/// The USD value of `wei` at `price` USD per ETH, rounded up to the micro-dollar.
fn eth_usd_micros(wei: U256, price: Decimal) -> Option<i64> {
    let price_micros = (price * Decimal::from(1_000_000)).ceil().to_u128()?;
    let unit = U256::from(10u64).pow(U256::from(18u64));
    let product = wei.checked_mul(U256::from(price_micros))?;
    let micros = product.div_ceil(unit);
    i64::try_from(micros).ok()
}

impl Wallets {
    /// Validates a transfer request into a [`TransferSpec`].
    pub fn parse_transfer(
        &self,
        chain: &str,
        to: &str,
        amount: &str,
        currency: &str,
    ) -> Result<TransferSpec, WalletError> {
        if chain.trim().eq_ignore_ascii_case("solana") {
            return Err(invalid(
                "chain",
                "Solana transfers are not supported yet: the wallet's Solana address can receive funds, but sending from it is not available. Use ethereum, base or base-sepolia",
            ));
        }
        let chain = Chain::parse(chain).ok_or_else(|| {
            invalid(
                "chain",
                format!("Unknown chain `{chain}`: use ethereum, base or base-sepolia"),
            )
        })?;
        let to_addr: Address = to.trim().parse().map_err(|_| {
            invalid(
                "to",
                "`to` must be an EVM address: 0x followed by 40 hex digits",
            )
        })?;
        if to_addr.is_zero() {
            return Err(invalid("to", "`to` must not be the zero address"));
        }
        let currency = Currency::parse(currency).ok_or_else(|| {
            invalid(
                "currency",
                format!("Unknown currency `{currency}`: use USDC or ETH"),
            )
        })?;
        let base_units = parse_amount(amount, currency.decimals(), currency.as_str())?;
        let too_large = || {
            invalid(
                "amount",
                format!(
                    "`amount` is too large: at most {} whole digits for {}",
                    currency.max_whole_digits(),
                    currency.as_str()
                ),
            )
        };
        let whole = amount.split('.').next().unwrap_or_default();
        if whole.len() > currency.max_whole_digits() {
            return Err(too_large());
        }
        let usd_micros = match currency {
            Currency::Usdc => i64::try_from(base_units).map_err(|_| too_large())?,
            Currency::Eth => {
                let price = self.eth_usd_price.ok_or_else(|| {
                    invalid(
                        "currency",
                        "ETH transfers are disabled on this server: spending limits need an ETH price in USD, and none is configured (AIBANK_ETH_USD_PRICE)",
                    )
                })?;
                eth_usd_micros(base_units, price).ok_or_else(too_large)?
            }
        };
        Ok(TransferSpec {
            chain,
            to: to_addr,
            currency,
            amount: amount.to_owned(),
            base_units,
            usd: Usd::from_micros(usd_micros),
        })
    }

    /// Sends a transfer from `wallet`. Returns the record and whether it is a replay of an
    /// earlier request with the same `Idempotency-Key`.
    pub async fn transfer(
        &self,
        wallet: &Wallet,
        spec: &TransferSpec,
        idempotency: Option<Idempotency>,
    ) -> Result<(WalletTransfer, bool), WalletError> {
        if let Some(i) = &idempotency {
            if let Some(prev) = self.previous(&wallet.agent_id, i).await? {
                return Ok((prev, true));
            }
        }
        let rpc = self
            .rpc(spec.chain)
            .ok_or(WalletError::NoRpc(spec.chain.name()))?;
        let row = self.reserve(wallet, spec, idempotency.clone()).await;
        let row = match row {
            Ok(row) => row,
            Err(TxStop::Stopped(Raced)) => {
                let i = idempotency.as_ref().ok_or(WalletError::NotFound)?;
                let prev = self
                    .previous(&wallet.agent_id, i)
                    .await?
                    .ok_or(WalletError::NotFound)?;
                return Ok((prev, true));
            }
            Err(TxStop::Failed(e)) => return Err(e),
        };
        self.send(rpc, wallet, spec, row).await.map(|t| (t, false))
    }

    /// The transfer an earlier request with this key made, if any.
    async fn previous(
        &self,
        agent_id: &str,
        i: &Idempotency,
    ) -> Result<Option<WalletTransfer>, WalletError> {
        let (agent_id, key) = (agent_id.to_owned(), i.key.clone());
        let prev: Option<WalletTransfer> = self
            .pool
            .run(move |c| {
                wallets::transfer_by_idempotency_key(c, &agent_id, &key).map_err(StoreError::from)
            })
            .await?;
        match prev {
            Some(p) if p.request_hash.as_deref() != Some(i.request_hash.as_str()) => {
                Err(WalletError::IdempotencyMismatch)
            }
            // Nothing moved: the key is free again, so a retry really retries.
            Some(p) if p.status == TRANSFER_FAILED => {
                let id = p.id;
                self.pool
                    .run(move |c| {
                        wallets::free_failed_idempotency_key(c, &id).map_err(StoreError::from)
                    })
                    .await?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Refuses a recipient the wallet's allowlist does not name (an empty list allows all).
    fn check_allowed(
        c: &mut AnyConnection,
        wallet_id: &str,
        to: Address,
    ) -> Result<(), TxStop<Raced, WalletError>> {
        if wallets::allowlist_admits(c, wallet_id, &format!("{to:#x}"))? {
            Ok(())
        } else {
            Err(TxStop::Failed(WalletError::AddressNotAllowed {
                to: to.to_checksum(None),
            }))
        }
    }

    /// Checks the recipient allowlist and the spending limits and records the transfer,
    /// atomically: concurrent transfers (and credit spends) of one agent serialise on its
    /// account row, and a recipient removed from the list is not paid after.
    async fn reserve(
        &self,
        wallet: &Wallet,
        spec: &TransferSpec,
        idempotency: Option<Idempotency>,
    ) -> Result<WalletTransfer, TxStop<Raced, WalletError>> {
        let now = self.clock.now_ms();
        let row = WalletTransfer {
            id: new_id("wtx"),
            wallet_id: wallet.id.clone(),
            agent_id: wallet.agent_id.clone(),
            chain: spec.chain.name().to_owned(),
            from_address: wallet.evm_address.clone(),
            to_address: spec.to.to_checksum(None),
            currency: spec.currency.as_str().to_owned(),
            amount: spec.amount.clone(),
            amount_base: spec.base_units.to_string(),
            usd_micros: spec.usd.micros(),
            nonce: None,
            tx_hash: None,
            status: SENDING.to_owned(),
            error: None,
            block_number: None,
            idempotency_key: idempotency.as_ref().map(|i| i.key.clone()),
            request_hash: idempotency.map(|i| i.request_hash),
            created_at: now,
            updated_at: now,
        };
        let (usd, to) = (spec.usd, spec.to);
        self.pool
            .run(move |c| {
                c.write_tx(|c| {
                    Self::check_allowed(c, &row.wallet_id, to)?;
                    aibank_ledger::authorize(c, &row.agent_id, usd, now)
                        .map_err(|e| TxStop::Failed(e.into()))?;
                    match wallets::insert_transfer(c, &row) {
                        Ok(()) => Ok(row),
                        Err(e) if is_unique_violation(&e) => Err(TxStop::Stopped(Raced)),
                        Err(e) => Err(e.into()),
                    }
                })
            })
            .await
    }

    /// From a recorded transfer to a broadcast (and, within the wait, mined) one.
    async fn send(
        &self,
        rpc: &ChainRpc,
        wallet: &Wallet,
        spec: &TransferSpec,
        mut row: WalletTransfer,
    ) -> Result<WalletTransfer, WalletError> {
        let signer = match keys::evm_signer(
            &self.secret_box,
            &wallet.id,
            &wallet.evm_key_sealed,
            &wallet.evm_address,
        ) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&mut row, "the wallet key could not be opened")
                    .await?;
                return Err(e);
            }
        };
        let from = signer.address();
        let funded = async {
            rpc.check_chain().await?;
            let balance = balance(rpc, spec.currency, from).await?;
            if balance < spec.base_units {
                return Err(RpcError::Rejected {
                    chain: spec.chain.name(),
                    message: format!(
                        "insufficient {} balance: the wallet holds {} base units, the transfer needs {}",
                        spec.currency.as_str(),
                        balance,
                        spec.base_units
                    ),
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = funded {
            return Err(self.refused(&mut row, e).await);
        }
        let call = transfer_call(rpc, spec);
        let sent = rpc
            .send(
                &signer,
                &call,
                &mut Outgoing {
                    wallets: self,
                    row: &mut row,
                },
            )
            .await;
        let sent = match sent {
            Ok(sent) => sent,
            // Marking the row failed frees the nonce it may hold.
            Err(SendError::NotSent(e)) => {
                row.tx_hash = None;
                return Err(self.refused(&mut row, e).await);
            }
            Err(SendError::Nonce(e)) => {
                self.fail(&mut row, "no nonce could be allocated").await?;
                return Err(e);
            }
            Err(SendError::Record(e)) => return Err(e),
            // The node may or may not have it: keep it pending (and counted) and say so.
            Err(SendError::Unknown(e)) => {
                PENDING.clone_into(&mut row.status);
                row.error = Some(e.to_string());
                self.save(&row).await?;
                return Err(WalletError::Unavailable(e, Some(Box::new(row))));
            }
        };
        PENDING.clone_into(&mut row.status);
        self.save(&row).await?;
        tracing::info!(
            transfer_id = %row.id,
            chain = spec.chain.name(),
            tx_hash = row.tx_hash.as_deref().unwrap_or_default(),
            nonce = sent.nonce,
            "wallet transfer broadcast"
        );
        // Not mined within the wait, or the receipt could not be read: it stays pending.
        if let Ok(Some(m)) = rpc.wait_mined(sent.hash, self.confirm_timeout).await {
            row.block_number = i64::try_from(m.block_number).ok();
            if !m.success {
                self.fail(&mut row, REVERTED).await?;
                return Err(WalletError::Failed {
                    reason: REVERTED.to_owned(),
                    transfer: Box::new(row),
                });
            }
            CONFIRMED.clone_into(&mut row.status);
            self.save(&row).await?;
        }
        Ok(row)
    }

    /// Marks a transfer that sent nothing as failed and turns the reason into the answer.
    async fn refused(&self, row: &mut WalletTransfer, e: RpcError) -> WalletError {
        let reason = match &e {
            RpcError::Rejected { message, .. } => message.clone(),
            RpcError::Unavailable { .. } => e.to_string(),
        };
        if let Err(db) = self.fail(row, &reason).await {
            return db;
        }
        match e {
            RpcError::Rejected { .. } => WalletError::Failed {
                reason,
                transfer: Box::new(row.clone()),
            },
            RpcError::Unavailable { .. } => {
                WalletError::Unavailable(e, Some(Box::new(row.clone())))
            }
        }
    }

    async fn fail(&self, row: &mut WalletTransfer, reason: &str) -> Result<(), WalletError> {
        TRANSFER_FAILED.clone_into(&mut row.status);
        row.error = Some(reason.to_owned());
        self.save(row).await
    }

    async fn save(&self, row: &WalletTransfer) -> Result<(), WalletError> {
        let mut row = row.clone();
        row.updated_at = self.clock.now_ms();
        // A transfer a listing already settled keeps what the chain said.
        self.pool
            .run(move |c| wallets::record_progress(c, &row).map_err(StoreError::from))
            .await?;
        Ok(())
    }

    /// Brings transfers that went out but are not settled up to date with their receipts
    /// (best effort: a chain that cannot be reached leaves them as they are). That is
    /// `pending` ones, and `sending` ones with a hash, which a crash may have left between
    /// the broadcast and the record of it.
    pub async fn refresh(&self, rows: &mut [WalletTransfer]) {
        use futures_util::StreamExt;
        // A few receipts at a time; a chain that fails once is not asked again for this
        // page: a listing must not wait one RPC timeout per transfer.
        let down = std::sync::Mutex::new(Vec::<Chain>::new());
        let is_down = |chain: Chain| {
            down.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&chain)
        };
        let unsettled = rows
            .iter_mut()
            .filter(|r| r.status == PENDING || (r.status == SENDING && r.tx_hash.is_some()));
        let mined: Vec<_> = futures_util::stream::iter(unsettled)
            .filter_map(|row| {
                let rpc = Chain::parse(&row.chain)
                    .filter(|c| !is_down(*c))
                    .and_then(|c| self.rpc(c));
                let hash = row.tx_hash.as_deref().and_then(|h| h.parse().ok());
                std::future::ready(rpc.zip(hash).map(|(rpc, hash)| (row, rpc, hash)))
            })
            .map(|(row, rpc, hash)| {
                let down = &down;
                async move {
                    if let Ok(m) = rpc.receipt(hash).await {
                        m.map(|m| (row, m))
                    } else {
                        down.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(rpc.chain);
                        None
                    }
                }
            })
            .buffer_unordered(RECEIPTS_AT_ONCE)
            .filter_map(std::future::ready)
            .collect()
            .await;
        for (row, m) in mined {
            row.block_number = i64::try_from(m.block_number).ok();
            if m.success {
                CONFIRMED.clone_into(&mut row.status);
                row.error = None;
            } else {
                TRANSFER_FAILED.clone_into(&mut row.status);
                row.error = Some(REVERTED.to_owned());
            }
            if let Err(e) = self.save(row).await {
                tracing::warn!(error = %e, "could not record a transfer's receipt");
            }
        }
    }
}

/// What `spec` sends, as a transaction.
fn transfer_call(rpc: &ChainRpc, spec: &TransferSpec) -> Call {
    match spec.currency {
        Currency::Eth => Call::native(spec.to, spec.base_units),
        Currency::Usdc => Call::erc20_transfer(rpc.usdc, spec.to, spec.base_units),
    }
}

async fn balance(rpc: &ChainRpc, currency: Currency, who: Address) -> Result<U256, RpcError> {
    match currency {
        Currency::Eth => rpc.native_balance(who).await,
        Currency::Usdc => rpc.usdc_balance(who).await,
    }
}

/// How many receipts a listing reads concurrently.
const RECEIPTS_AT_ONCE: usize = 8;

/// A transfer's row as the record the sender keeps the transaction's nonce and hash in.
struct Outgoing<'a> {
    wallets: &'a Wallets,
    row: &'a mut WalletTransfer,
}

impl TxRecord for Outgoing<'_> {
    type Error = WalletError;

    /// See [`aibank_store::repo::wallets::take_nonce`]: the nonces the wallet's transfers
    /// hold on the chain are the ones not handed out again.
    async fn take_nonce(&mut self, chain_nonce: u64) -> Result<u64, WalletError> {
        let (id, wallet_id, chain) = (
            self.row.id.clone(),
            self.row.wallet_id.clone(),
            self.row.chain.clone(),
        );
        let floor = i64::try_from(chain_nonce).unwrap_or(i64::MAX);
        let nonce = self
            .wallets
            .pool
            .run(move |c| {
                wallets::take_nonce(c, &id, &wallet_id, &chain, floor).map_err(StoreError::from)
            })
            .await?;
        self.row.nonce = Some(nonce);
        Ok(u64::try_from(nonce).unwrap_or_default())
    }

    async fn signed(&mut self, hash: B256) -> Result<(), WalletError> {
        self.row.tx_hash = Some(format!("{hash:#x}"));
        self.wallets.save(self.row).await
    }
}

/// A concurrent request with the same `Idempotency-Key` recorded its transfer first.
struct Raced;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(
            parse_amount("1.5", 6, "USDC").unwrap(),
            U256::from(1_500_000)
        );
        assert_eq!(parse_amount("0.000001", 6, "USDC").unwrap(), U256::from(1));
        assert_eq!(parse_amount("2", 6, "USDC").unwrap(), U256::from(2_000_000));
        for bad in [
            "", "-1", "1.", ".5", "1e6", "1,5", " 1", "0x10", "1.2.3", "0", "0.000",
        ] {
            assert!(parse_amount(bad, 6, "USDC").is_err(), "{bad}");
        }
        assert!(parse_amount("0.0000001", 6, "USDC").is_err());
        assert_eq!(
            parse_amount("0.000000000000000001", 18, "ETH").unwrap(),
            U256::from(1)
        );
    }

    #[test]
    fn eth_value_rounds_up_to_the_micro_dollar() {
        let price: Decimal = "3000".parse().unwrap();
        let one_eth = U256::from(10u64).pow(U256::from(18u64));
        assert_eq!(eth_usd_micros(one_eth, price), Some(3_000_000_000));
        assert_eq!(eth_usd_micros(U256::from(1), price), Some(1));
        assert_eq!(
            eth_usd_micros(one_eth / U256::from(1000), "2500.5".parse().unwrap()),
            Some(2_500_500)
        );
    }
}
