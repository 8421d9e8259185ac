import AMQP
import AsyncHTTPClient
import Foundation
import NIOCore

/// What `warren check --connect` says about a quorum queue's delivery limit once it knows the
/// arguments and the policy in effect (docs/cluster.md, "Delivery limits"). AMQP 0-9-1 cannot
/// tell a queue's policy, so the facts come from RabbitMQ's management API (`QueuePolicies`).
public enum DeliveryLimitCheck {
    /// A queue's arguments and the definition of the policies in effect on it, as the
    /// management API reports them.
    public struct Facts: Sendable, Equatable {
        public var deliveryLimitArgument: Int64?
        public var deliveryLimitPolicy: Int64?
        public var deadLetterExchange: Bool
        public var policyName: String?

        public init(deliveryLimitArgument: Int64? = nil, deliveryLimitPolicy: Int64? = nil, deadLetterExchange: Bool = false, policyName: String? = nil) {
            self.deliveryLimitArgument = deliveryLimitArgument
            self.deliveryLimitPolicy = deliveryLimitPolicy
            self.deadLetterExchange = deadLetterExchange
            self.policyName = policyName
        }

        /// When both are set, RabbitMQ applies the lower.
        public var effectiveLimit: Int64? {
            switch (deliveryLimitArgument, deliveryLimitPolicy) {
            case (let a?, let p?): min(a, p)
            case (let a?, nil): a
            case (nil, let p?): p
            case (nil, nil): nil
            }
        }
    }

    /// The warnings for `queue` (at `path`, e.g. `queues[0]`), each a sentence with the fix.
    public static func warnings(for queue: QueueConfiguration, at path: String, facts: Facts) -> [String] {
        guard let limit = facts.effectiveLimit else { return [] }
        let source = facts.deliveryLimitPolicy == limit
            ? "policy \"\(facts.policyName ?? "?")\"" : "argument x-delivery-limit"
        var warnings: [String] = []
        if let retry = queue.retry, Int64(retry.maxAttempts) > limit {
            warnings.append(
                "\(path): the queue's delivery limit is \(limit) (\(source)), below retry.max_attempts \(retry.maxAttempts): a message requeued more than \(limit) times (verdict requeue, manual failures, warren stopped while handling it) is taken away by the broker before warren parks it; raise the limit above max_attempts or lower max_attempts")
        }
        if !facts.deadLetterExchange {
            warnings.append(
                "\(path): the queue's delivery limit is \(limit) (\(source)) and it has no dead-letter exchange: the broker drops a message requeued more than \(limit) times; set x-dead-letter-exchange (argument or policy) or remove the limit")
        }
        return warnings
    }

    /// Reads `Facts` from the JSON of `GET /api/queues/<vhost>/<name>`; nil when it is not a
    /// queue object.
    public static func facts(fromQueueJSON data: Data) -> Facts? {
        guard let queue = try? JSONDecoder().decode(QueueJSON.self, from: data) else { return nil }
        let arguments = queue.arguments?.values ?? [:]
        let policy = queue.effectivePolicyDefinition?.values ?? [:]
        return Facts(
            deliveryLimitArgument: arguments["x-delivery-limit"]?.integer, deliveryLimitPolicy: policy["delivery-limit"]?.integer,
            deadLetterExchange: arguments["x-dead-letter-exchange"] != nil || policy["dead-letter-exchange"] != nil,
            policyName: queue.policy.flatMap { $0.isEmpty ? nil : $0 })
    }

    private struct QueueJSON: Decodable {
        var arguments: LenientObject?
        var effectivePolicyDefinition: LenientObject?
        var policy: String?

        enum CodingKeys: String, CodingKey {
            case arguments
            case effectivePolicyDefinition = "effective_policy_definition"
            case policy
        }
    }

    /// A JSON object of any values, of which only integers are read; the management API writes
    /// an empty definition as `[]`, read as an empty object.
    private struct LenientObject: Decodable {
        var values: [String: Scalar] = [:]

        init(from decoder: any Decoder) throws {
            values = (try? decoder.singleValueContainer().decode([String: Scalar].self)) ?? [:]
        }
    }

    private struct Scalar: Decodable {
        var integer: Int64?

        init(from decoder: any Decoder) throws {
            integer = try? decoder.singleValueContainer().decode(Int64.self)
        }
    }
}

/// RabbitMQ's management HTTP API, asked for one queue's arguments and policy.
public struct QueuePolicies: Sendable {
    public let baseURL: String
    let authorization: String

    public init(baseURL: String, user: String, password: String) {
        self.baseURL = baseURL
        authorization = "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The facts for `queue` in `vhost`; nil when the API does not know the queue.
    public func facts(queue: String, vhost: String) async throws(Failure) -> DeliveryLimitCheck.Facts? {
        let url = "\(baseURL)/api/queues/\(Self.segment(vhost))/\(Self.segment(queue))"
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: authorization)
        request.headers.add(name: "Accept", value: "application/json")
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 4 << 20)
            switch response.status.code {
            case 200:
                guard let facts = DeliveryLimitCheck.facts(fromQueueJSON: Data(body.readableBytesView)) else {
                    throw Failure(description: "\(baseURL) answered GET /api/queues/... with JSON warren cannot read")
                }
                return facts
            case 404: return nil
            case 401, 403: throw Failure(description: "\(baseURL) refused the broker URL's user (HTTP \(response.status.code)); the user needs the monitoring tag")
            default: throw Failure(description: "\(baseURL) answered HTTP \(response.status.code)")
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(description: "cannot reach \(baseURL): \(error)")
        }
    }

    /// One path segment ("/" is "%2F").
    static func segment(_ text: String) -> String { PercentEncoding.encode(text) }
}
