internal import CRabbitMQ
internal import CRabbitMQShims

/// TLS for `amqps://` endpoints: socket setup and the translation of librabbitmq 0.11's terse
/// TLS statuses into errors an operator can act on.
///
/// librabbitmq reports a failed peer check and a failed hostname check at open time with their
/// own statuses, but everything the *broker* objects to (no client certificate, a client
/// certificate it does not trust) arrives as a bare `AMQP_STATUS_SSL_ERROR`, and in TLS 1.3 only
/// at login, because the server checks the client certificate after the client has finished its
/// side of the handshake. The broker's TLS alert is still in the I/O thread's
/// OpenSSL error queue then, which is what `warren_tls_last_failure` reads. Both calls run on the
/// I/O thread, so the thread-local queue belongs to this connection attempt.
extension IOLoop {
    static func tlsSocket(_ connection: amqp_connection_state_t, _ tls: TLSConfiguration, endpoint: String)
        throws(AMQPError) -> OpaquePointer?
    {
        guard let socket = amqp_ssl_socket_new(connection) else {
            throw AMQPError(.tls, "TLS: cannot create a TLS socket (OpenSSL initialisation failed)", endpoint: endpoint)
        }
        // TLS 1.0/1.1 are broken; 1.3 stays allowed (and is what RabbitMQ 3.10 negotiates).
        guard warren_tls_require_tls12(socket) == 0 else {
            throw AMQPError(.tls, "TLS: cannot set TLS 1.2 as the minimum protocol version", endpoint: endpoint)
        }
        amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
        amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        if let ca = tls.caFile {
            guard amqp_ssl_socket_set_cacert(socket, ca) == AMQP_STATUS_OK.rawValue else {
                throw AMQPError(.tls, "TLS: cannot load the CA file \(ca) (missing, unreadable or not PEM)", endpoint: endpoint)
            }
        }
        switch (tls.certFile, tls.keyFile) {
        case (let cert?, let key?):
            // Encrypted keys are not supported: 0.11 would prompt on the terminal for a password.
            guard amqp_ssl_socket_set_key(socket, cert, key) == AMQP_STATUS_OK.rawValue else {
                throw AMQPError(
                    .tls, "TLS: cannot load the client certificate \(cert) with key \(key) (missing, unreadable, not PEM, "
                        + "an encrypted key, or a key that does not match the certificate)", endpoint: endpoint)
            }
        case (nil, nil):
            break
        default:
            throw AMQPError(.tls, "TLS: a client certificate needs both cert_file and key_file", endpoint: endpoint)
        }
        warren_tls_clear_errors()
        return socket
    }

    /// Explains a failed `amqp_socket_open_noblock` on a TLS socket, or nil when the status is
    /// not about TLS (connection refused, timeout), which the caller reports as usual.
    static func tlsOpenError(status: Int32, endpoint: AMQPEndpoint, tls: TLSConfiguration) -> AMQPError? {
        let where_ = endpoint.description
        switch status {
        case AMQP_STATUS_SSL_PEER_VERIFY_FAILED.rawValue:
            guard let ca = tls.caFile else {
                return AMQPError(
                    .tls, "TLS: the broker's certificate cannot be verified: no ca_file is set, and librabbitmq 0.11 "
                        + "does not use the system CA store", endpoint: where_)
            }
            return AMQPError(
                .tls, "TLS: the broker's certificate is not signed by a CA in \(ca) (or it has expired or is not yet valid)",
                endpoint: where_)
        case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED.rawValue:
            return AMQPError(
                .tls, "TLS: certificate hostname mismatch for \(endpoint.host): the broker's certificate does not name "
                    + "this host (librabbitmq 0.11 matches DNS names only, never IP addresses: connect by a DNS name in "
                    + "the certificate, or set verify_hostname = false)", endpoint: where_)
        case AMQP_STATUS_SSL_ERROR.rawValue, AMQP_STATUS_SSL_CONNECTION_FAILED.rawValue:
            return sessionError(during: "the TLS handshake with \(endpoint.host):\(endpoint.port)", endpoint: endpoint, tls: tls)
                ?? AMQPError(
                    .tls, "TLS: the TLS handshake with \(endpoint.host):\(endpoint.port) failed (is this a TLS port?)",
                    endpoint: where_)
        default:
            return nil
        }
    }

    /// Explains a TLS failure during the AMQP login: in TLS 1.3 this is where the broker's
    /// verdict on the client certificate arrives. Nil when the failure is not about TLS.
    static func tlsLoginError(status: Int32, endpoint: AMQPEndpoint, tls: TLSConfiguration) -> AMQPError? {
        guard status == AMQP_STATUS_SSL_ERROR.rawValue || status == AMQP_STATUS_CONNECTION_CLOSED.rawValue
            || status == AMQP_STATUS_SOCKET_ERROR.rawValue
        else { return nil }
        if let error = sessionError(during: "the AMQP handshake", endpoint: endpoint, tls: tls) { return error }
        guard status == AMQP_STATUS_SSL_ERROR.rawValue else { return nil }
        // No alert to go by. A broker that closes a fresh TLS session at login without saying why
        // most often wants a client certificate (fail_if_no_peer_cert).
        if tls.certFile == nil {
            return AMQPError(
                .tls, "TLS: the broker closed the TLS session during the AMQP handshake; it probably requires a client "
                    + "certificate (set cert_file and key_file)", endpoint: endpoint.description)
        }
        // The broker's alert is not always in OpenSSL's error queue yet when the login fails.
        return AMQPError(
            .tls, "TLS: the broker closed the TLS session during the AMQP handshake; it may have refused the client "
                + "certificate \(tls.certFile ?? ""): is it signed by a CA the broker trusts?", endpoint: endpoint.description)
    }

    /// The broker's TLS alert, from this thread's OpenSSL error queue, as an error; nil when the
    /// queue holds nothing.
    private static func sessionError(during phase: String, endpoint: AMQPEndpoint, tls: TLSConfiguration) -> AMQPError? {
        var buffer = [CChar](repeating: 0, count: 256)
        let failure = buffer.withUnsafeMutableBufferPointer { warren_tls_last_failure($0.baseAddress, $0.count) }
        let reason = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let where_ = endpoint.description
        switch failure {
        case WARREN_TLS_FAILURE_CERTIFICATE_REQUIRED:
            return AMQPError(.tls, "TLS: the broker requires a client certificate (set cert_file and key_file)", endpoint: where_)
        case WARREN_TLS_FAILURE_CLIENT_CERTIFICATE_REFUSED:
            guard let cert = tls.certFile else {
                return AMQPError(
                    .tls, "TLS: the broker requires a client certificate (set cert_file and key_file) (OpenSSL: \(reason))",
                    endpoint: where_)
            }
            return AMQPError(
                .tls, "TLS: the broker refused the client certificate \(cert) (OpenSSL: \(reason)); is it signed by a CA "
                    + "the broker trusts?", endpoint: where_)
        case WARREN_TLS_FAILURE_CLIENT_CERTIFICATE_EXPIRED_OR_REVOKED:
            return AMQPError(
                .tls, "TLS: the broker refused the client certificate \(tls.certFile ?? "") as expired or revoked "
                    + "(OpenSSL: \(reason))", endpoint: where_)
        case WARREN_TLS_FAILURE_OTHER:
            return AMQPError(.tls, "TLS: \(phase) failed (OpenSSL: \(reason))", endpoint: where_)
        default:
            return nil
        }
    }
}
