//! The operator's campaigns from `tally.toml` (`[campaigns.<id>]`): checked when the
//! settings are read, so a mistake stops the start naming its key; defined in the
//! ledger by every process that starts (the same definition again appends nothing).

use std::collections::BTreeMap;

use anyhow::Context;
use tally_domain::campaign::{self, CampaignCommand, CampaignDef};

/// The campaigns as the file spells them, by id.
pub type FromFile = BTreeMap<String, CampaignDef>;

/// Checks every campaign as the ledger will (ids, posts, buttons, channels).
pub fn check(campaigns: FromFile) -> anyhow::Result<Vec<(String, CampaignDef)>> {
    let mut checked = Vec::new();
    for (id, def) in campaigns {
        campaign::check_campaign_id(&id)
            .and_then(|()| {
                campaign::decide(&Default::default(), &CampaignCommand::Define(def.clone()))
            })
            .map_err(|e| anyhow::anyhow!("tally.toml campaigns.{id}: {e}"))?;
        checked.push((id, def));
    }
    Ok(checked)
}

/// Defines each campaign (and the slots that post it) in the ledger.
pub async fn define(
    ledgers: &tally_ledger::Ledgers,
    campaigns: &[(String, CampaignDef)],
) -> anyhow::Result<()> {
    for (id, def) in campaigns {
        tally_ledger::workflows::define_campaign(
            ledgers,
            id,
            def.clone(),
            tally_store::Metadata::by(tally_store::Actor::system("tally.toml")),
        )
        .await
        .with_context(|| format!("defining campaign {id} from tally.toml"))?;
    }
    Ok(())
}
