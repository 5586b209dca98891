//! The Postfix, Dovecot and nginx configuration of a chatmail relay,
//! rendered from chatmail.ini and the templates in the repository's
//! postfix/, dovecot/, nginx/ and www/ directories, and checked with the
//! servers' own tools.

pub mod acme;
mod check;
mod context;
mod dkim_key;
pub mod dns;
mod error;
mod layout;
mod qr;
mod render;

pub use check::{
    dovecot as check_dovecot, nginx as check_nginx, nginx_site as check_nginx_site,
    opendkim as check_opendkim, postfix as check_postfix,
};
pub use context::Context;
pub use dkim_key::{dns_record as dkim_dns_record, ensure_key as ensure_dkim_key};
pub use error::ConfigureError;
pub use layout::{
    BehindHttps, DictSockets, Layout, OpenDkimLayout, PrivateInstance, PublicPorts, Vmail,
    WebLayout,
};
pub use render::{
    RenderedFile, copy_www_files, remove_unused, render_all, render_template, write_files,
};
