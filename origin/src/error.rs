use std::path::PathBuf;

/// Why an ingest failed. Every variant names the file (or playlist) at fault; nothing is
/// published when any of them occurs.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A file of the rendition could not be read, or the store could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or imported.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The media playlist does not parse.
    #[error("{}: {source}", path.display())]
    Playlist {
        /// The playlist file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: mhc_manifest::PlaylistError,
    },
    /// The folder is not a publishable rendition (unfinished playlist, unsupported segments...).
    #[error("{}: {problem}", path.display())]
    Rendition {
        /// The playlist or file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        problem: String,
    },
    /// A segment file is empty.
    #[error("{}: segment is empty", .0.display())]
    EmptyFile(PathBuf),
    /// The manifest built from the folder breaks a manifest rule (limits, durations).
    #[error("manifest: {0}")]
    Manifest(#[source] mhc_manifest::ManifestError),
}
