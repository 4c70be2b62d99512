//! File names: [`DsrFileName`] reads the DSR file naming convention.

/// A DSR file name that does not follow the naming convention.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DSR file name {name:?}: {problem}")]
pub struct FileNameError {
    /// The name as given.
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

/// The parts of a DSR file name (DSR Part 1, "File Naming Convention"):
/// `DSR_MessageRecipient_MessageSender_ServiceDescription_Period_Territory_XofY_Created.tsv`,
/// optionally `.gz`. The recipient (the label) comes first; the recipient, the territory and
/// `XofY` may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsrFileName {
    /// The recipient's name or DDEX Party ID; empty for a report to several recipients.
    pub recipient: String,
    /// The sender's (the DSP's) name or DDEX Party ID.
    pub sender: String,
    /// The service, e.g. `Premium` (tiers joined by dashes).
    pub service_description: String,
    /// The reporting period: `2024`, `2024-03`, `2024-Q1`, `2024-03-01--2024-03-31`, ...
    pub period: String,
    /// The territory, e.g. `DE`, or what sender and recipient agreed.
    pub territory: String,
    /// `x` of `XofY`: this file's number, when given.
    pub file_number: Option<u64>,
    /// `y` of `XofY`: the number of files of the report, when given.
    pub number_of_files: Option<u64>,
    /// When the report was created, `YYYYMMDDThhmmss` (basic ISO 8601, no zone).
    pub created: String,
    /// Whether the name ends in `.gz`.
    pub gzip: bool,
}

impl DsrFileName {
    /// Parses a file name (without directories).
    ///
    /// # Errors
    /// [`FileNameError`] naming the part that does not fit.
    pub fn parse(name: &str) -> Result<Self, FileNameError> {
        let error = |problem: String| FileNameError {
            name: name.to_owned(),
            problem,
        };
        let (stem, gzip) = if let Some(stem) = name.strip_suffix(".tsv.gz") {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(".tsv") {
            (stem, false)
        } else {
            return Err(error("does not end in .tsv or .tsv.gz".into()));
        };
        let parts: Vec<&str> = stem.split('_').collect();
        let [prefix, recipient, sender, service, period, territory, x_of_y, created] = parts[..]
        else {
            return Err(error(format!(
                "has {} parts separated by \"_\", DSR_Recipient_Sender_Service_Period_\
                 Territory_XofY_Created has 8",
                parts.len()
            )));
        };
        if prefix != "DSR" {
            return Err(error("does not start with DSR_".into()));
        }
        for (part, what) in [(sender, "sender"), (service, "service"), (period, "period")] {
            if part.is_empty() {
                return Err(error(format!("the {what} is empty")));
            }
        }
        let (file_number, number_of_files) = if x_of_y.is_empty() {
            (None, None)
        } else {
            let parsed = x_of_y
                .split_once("of")
                .and_then(|(x, y)| Some((x.parse::<u64>().ok()?, y.parse::<u64>().ok()?)))
                .filter(|&(x, y)| x >= 1 && x <= y);
            let (x, y) = parsed.ok_or_else(|| error(format!("{x_of_y:?} is not XofY")))?;
            (Some(x), Some(y))
        };
        let b = created.as_bytes();
        let basic_iso = b.len() >= 15
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit);
        if !basic_iso {
            return Err(error(format!("{created:?} is not YYYYMMDDThhmmss")));
        }
        Ok(Self {
            recipient: recipient.to_owned(),
            sender: sender.to_owned(),
            service_description: service.to_owned(),
            period: period.to_owned(),
            territory: territory.to_owned(),
            file_number,
            number_of_files,
            created: created.to_owned(),
            gzip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_the_convention() {
        let name = DsrFileName::parse(
            "DSR_PADPIDA2024010101M_PADPIDA2011072101T_Premium_2024-03_DE_1of2_20240402T100000.tsv.gz",
        )
        .unwrap();
        assert_eq!(
            name,
            DsrFileName {
                recipient: "PADPIDA2024010101M".into(),
                sender: "PADPIDA2011072101T".into(),
                service_description: "Premium".into(),
                period: "2024-03".into(),
                territory: "DE".into(),
                file_number: Some(1),
                number_of_files: Some(2),
                created: "20240402T100000".into(),
                gzip: true,
            }
        );
        let single =
            DsrFileName::parse("DSR__ExampleDSP_AdSupport_2024-Q1___20240402T100000.tsv").unwrap();
        assert_eq!(
            (single.recipient.as_str(), single.file_number, single.gzip),
            ("", None, false)
        );
        for bad in [
            "DSR_A_B_C_2024_DE_1of1_20240402T100000.csv",
            "DSR_A_B_C_2024_DE_20240402T100000.tsv",
            "XYZ_A_B_C_2024_DE_1of1_20240402T100000.tsv",
            "DSR_A_B_C_2024_DE_3of2_20240402T100000.tsv",
            "DSR_A_B_C_2024_DE_1of1_2024-04-02.tsv",
        ] {
            assert!(DsrFileName::parse(bad).is_err(), "{bad}");
        }
    }
}
