//! Authentication and authorisation: password files and ACLs.
#![warn(missing_docs)]
