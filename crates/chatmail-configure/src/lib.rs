//! The Postfix, Dovecot and nginx configuration of a chatmail relay,
//! rendered from chatmail.ini and the templates in the repository's
//! postfix/, dovecot/, nginx/ and www/ directories, and checked with the
//! servers' own tools.

mod check;
mod context;
mod error;
mod layout;
mod render;

pub use check::{
    dovecot as check_dovecot, nginx as check_nginx, nginx_site as check_nginx_site,
    postfix as check_postfix,
};
pub use context::Context;
pub use error::ConfigureError;
pub use layout::{DictSockets, Layout, PrivateInstance, PublicPorts, Vmail, WebLayout};
pub use render::{RenderedFile, render_all, render_template, write_files};
