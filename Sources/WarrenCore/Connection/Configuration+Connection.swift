import AMQP

extension Configuration {
    /// The AMQP settings for one of Warren's connections; `role` ("consumer", "publisher",
    /// "check") is appended to the connection name so the management UI tells them apart.
    public func connectionConfiguration(role: String) -> ConnectionConfiguration {
        var configuration = ConnectionConfiguration(endpoints: broker.endpoints)
        configuration.heartbeat = broker.heartbeat
        configuration.connectTimeout = broker.connectTimeout
        configuration.handshakeTimeout = max(broker.connectTimeout, .seconds(10))
        configuration.connectionName = "\(broker.connectionName) \(role)"
        configuration.clientVersion = WarrenVersion.current
        if let tls = broker.tls {
            configuration.tls = TLSConfiguration(
                caFile: tls.caFile, certFile: tls.certFile, keyFile: tls.keyFile, verifyPeer: tls.verifyPeer,
                verifyHostname: tls.verifyHostname)
        }
        return configuration
    }
}
