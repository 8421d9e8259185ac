import Foundation

/// One broker node to connect to, parsed from an `amqp://` or `amqps://` URL following the
/// RabbitMQ URI spec: no path or a lone `/` is the vhost `/`; any other path is one
/// percent-decoded segment (`%2f` = `/`). User and password are percent-decoded too.
public struct AMQPEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var vhost: String
    public var user: String
    public var password: String
    public var useTLS: Bool

    public init(host: String, port: Int? = nil, vhost: String = "/", user: String = "guest", password: String = "guest", useTLS: Bool = false) {
        self.host = host
        self.port = port ?? (useTLS ? 5671 : 5672)
        self.vhost = vhost
        self.user = user
        self.password = password
        self.useTLS = useTLS
    }

    /// Parses a URL; the error message never contains the password.
    public init(url: String) throws(AMQPError) {
        // Checked first: Foundation refuses the whole URL for a bad escape, which would hide the cause.
        if let authority = url.range(of: "://"), let slash = url[authority.upperBound...].firstIndex(of: "/") {
            let path = url[slash...].prefix { $0 != "?" && $0 != "#" }
            guard Self.isValidPercentEncoding(path) else {
                throw AMQPError(.invalidArgument, "\(Self.redact(url)): the vhost is not valid percent-encoding")
            }
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw AMQPError(.invalidArgument, "\(Self.redact(url)) is not a valid URL")
        }
        let redacted = Self.redact(url)
        switch scheme {
        case "amqp": useTLS = false
        case "amqps": useTLS = true
        default:
            throw AMQPError(.invalidArgument, "\(redacted): the scheme must be amqp or amqps, not \"\(scheme)\"")
        }
        guard var host = components.host, !host.isEmpty else {
            throw AMQPError(.invalidArgument, "\(redacted) has no host")
        }
        if host.hasPrefix("["), host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        }
        self.host = host
        if let port = components.port {
            guard (1...65535).contains(port) else {
                throw AMQPError(.invalidArgument, "\(redacted): port \(port) is out of range")
            }
            self.port = port
        } else {
            self.port = useTLS ? 5671 : 5672
        }
        user = components.user ?? "guest"
        password = components.password ?? "guest"
        let path = components.percentEncodedPath
        if path.isEmpty || path == "/" {
            vhost = "/"
        } else {
            let segment = path.dropFirst()
            guard !segment.contains("/") else {
                throw AMQPError(.invalidArgument, "\(redacted): the vhost must be a single path segment (write / inside it as %2f)")
            }
            guard Self.isValidPercentEncoding(segment), let decoded = String(segment).removingPercentEncoding else {
                throw AMQPError(.invalidArgument, "\(redacted): the vhost is not valid percent-encoding")
            }
            vhost = decoded
        }
    }

    /// `amqp://user:***@host:port/vhost`: safe for logs and error messages.
    public var description: String {
        let scheme = useTLS ? "amqps" : "amqp"
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let vhostPart = vhost == "/" ? "/" : "/" + (vhost.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? vhost)
        return "\(scheme)://\(user):***@\(hostPart):\(port)\(vhostPart)"
    }

    private static func isValidPercentEncoding(_ text: Substring) -> Bool {
        var rest = text[...]
        while let percent = rest.firstIndex(of: "%") {
            let digits = rest[rest.index(after: percent)...].prefix(2)
            guard digits.count == 2, digits.allSatisfy(\.isHexDigit) else { return false }
            rest = rest[rest.index(percent, offsetBy: 3)...]
        }
        return true
    }

    /// Replaces the password of any URL-looking string with `***`, for messages about URLs that
    /// did not even parse (`scheme://user:pw@host`, and `scheme:user:pw@host` too).
    public static func redact(_ url: String) -> String {
        guard let colon = url.firstIndex(of: ":") else { return url }
        let afterScheme = url[url.index(after: colon)...]
        let schemeEnd = afterScheme.hasPrefix("//") ? url.index(colon, offsetBy: 3) : url.index(after: colon)
        let rest = url[schemeEnd...]
        guard let at = rest.lastIndex(of: "@") else { return url }
        let userInfo = rest[rest.startIndex..<at]
        guard let passwordStart = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<schemeEnd]) + userInfo[..<passwordStart] + ":***" + rest[at...]
    }
}
