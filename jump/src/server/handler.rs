//! The russh `Handler`: each method a few lines that delegate to `login`
//! (authentication, padded) or `channels` (everything after). Must not
//! decide anything itself.

use russh::{
    Channel, ChannelId, ChannelOpenFailure,
    server::{
        Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, SecurityKeySignature, Session,
        VerifiedPublicKey,
    },
};
use tokio::time::Instant;
use tracing::debug;

use super::{connection::Connection, login::padded};
use crate::audit::Request;

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self
            .live()
            .and_then(|c| c.jump.as_ref().and_then(|j| j.banner.clone()))
            .map(|b| if b.ends_with('\n') { b } else { b + "\n" }))
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        debug!(conn = self.who.conn, user = %crate::audit::bounded(user), "auth none");
        self.state.asked();
        Ok(self.check_none(user).into_auth())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        let started = Instant::now();
        let step = self.check_password(user);
        Ok(padded(started, step).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let started = Instant::now();
        let step = match offer.certificate {
            Some(cert) => self.check_certificate_offer(user, cert, offer.algorithm),
            None => self.check_key_offer(user, &offer),
        };
        Ok(padded(started, step).await)
    }

    async fn auth_openssh_certificate_refused(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
        reason: &'static str,
    ) -> Result<(), Self::Error> {
        self.certificate_refused_by_russh(user, certificate, reason);
        Ok(())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
        security_key: Option<SecurityKeySignature>,
    ) -> Result<Auth, Self::Error> {
        let started = Instant::now();
        let step = self
            .check_certificate(user, certificate, security_key)
            .await;
        Ok(padded(started, step).await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let started = Instant::now();
        let step = self.check_key(user, &key).await;
        Ok(padded(started, step).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let started = Instant::now();
        let step = self.check_code(user, response).await;
        Ok(padded(started, step).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.share_user_window(session);
        self.open_session(channel, reply).await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.share_user_window(session);
        self.open_direct_tcpip(
            channel,
            host_to_connect,
            port_to_connect,
            reply,
            session.handle(),
        )
        .await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.exec(channel, data, session).await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shell(channel, session).await;
        Ok(())
    }

    async fn data(
        &mut self,
        _channel: ChannelId,
        _data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Connection::data(self);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.subsystem(channel, name, session).await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.pty(channel, session).await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(Request::Env, variable_name);
        let _ = session.channel_failure(channel);
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(Request::X11, "no X11 forwarding");
        let _ = session.channel_failure(channel);
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(Request::Agent, "no agent forwarding");
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(Request::TcpipForward, &format!("{address}:{port}"));
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(Request::StreamlocalForward, socket_path);
        Ok(false)
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(Request::X11Channel, "no X11 forwarding");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(Request::DirectStreamlocal, socket_path);
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.closed(channel);
        Ok(())
    }
}
