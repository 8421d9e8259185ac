import Foundation
import Testing

@testable import WarrenCore

@Suite("HTTP status and Retry-After mapping", .timeLimit(.minutes(1)))
struct HTTPResponseMappingTests {
    /// An outcome reduced to what the mapping decides, so that tests compare values.
    enum Shape: Equatable {
        case success(reply: [UInt8]?)
        case failure(String, httpStatus: Int?)
        case verdict(Verdict, error: String?)
    }

    static func shape(_ outcome: HandlerOutcome) -> Shape {
        switch outcome {
        case .success(let output): .success(reply: output.reply)
        case .failure(let failure): .failure(failure.error, httpStatus: failure.httpStatus)
        case .verdict(let verdict, let error, _, _): .verdict(verdict, error: error)
        }
    }

    static func map(_ status: Int, retryAfter: String? = nil, body: HTTPResponseMapping.Body = .unwanted, now: Date = Date()) -> Shape {
        shape(HTTPResponseMapping.outcome(status: status, retryAfter: retryAfter, body: body, now: now))
    }

    /// Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
    static let rfcExampleDate = Date(timeIntervalSince1970: 784_111_777)

    @Test(arguments: [200, 201, 202, 204, 299])
    func successStatusesSucceedWithTheBodyAsTheReply(status: Int) {
        #expect(Self.map(status, body: .complete(Array("pong".utf8))) == .success(reply: Array("pong".utf8)))
        #expect(Self.map(status, body: .complete([])) == .success(reply: []))
        #expect(Self.map(status, body: .unwanted) == .success(reply: nil), "without reply_to there is no reply")
    }

    @Test func aReplyLongerThanOneMebibyteIsAFailureNotATruncatedReply() {
        #expect(Self.map(200, body: .tooLarge) == .failure("response body exceeds 1 MiB", httpStatus: 200))
    }

    @Test(arguments: [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 451, 499])
    func clientErrorsOtherThan408And429AreRejectedWithTheStatusInTheText(status: Int) {
        #expect(Self.map(status) == .verdict(.reject, error: "HTTP \(status)"))
        #expect(Self.map(status, retryAfter: "5") == .verdict(.reject, error: "HTTP \(status)"), "Retry-After counts only on 429 and 503")
    }

    @Test(arguments: [408, 429, 500, 501, 502, 503, 504, 599])
    func timeoutsThrottlingAndServerErrorsAreFailuresCarryingTheStatus(status: Int) {
        #expect(Self.map(status) == .failure("HTTP \(status)", httpStatus: status))
    }

    @Test(arguments: [300, 301, 302, 303, 304, 307, 308])
    func redirectsAreFailuresBecauseAWebhookMustNotSilentlyMove(status: Int) {
        #expect(Self.map(status) == .failure("HTTP \(status)", httpStatus: status))
    }

    @Test(arguments: [100, 101, 199, 600, 999])
    func statusesOutsideTheKnownClassesAreFailures(status: Int) {
        #expect(Self.map(status) == .failure("HTTP \(status)", httpStatus: status))
    }

    @Test func a429Or503WithRetryAfterSecondsIsARetryVerdictWithThatDelay() {
        #expect(Self.map(429, retryAfter: "2") == .verdict(.retry(delay: .seconds(2)), error: "HTTP 429"))
        #expect(Self.map(503, retryAfter: " 120 ") == .verdict(.retry(delay: .seconds(120)), error: "HTTP 503"))
        #expect(Self.map(503, retryAfter: "0") == .verdict(.retry(delay: .zero), error: "HTTP 503"))
    }

    @Test func retryAfterOnOtherStatusesIsIgnored() {
        #expect(Self.map(500, retryAfter: "2") == .failure("HTTP 500", httpStatus: 500))
        #expect(Self.map(408, retryAfter: "2") == .failure("HTTP 408", httpStatus: 408))
        #expect(Self.map(200, retryAfter: "2", body: .unwanted) == .success(reply: nil))
    }

    @Test func anUnreadableRetryAfterLeavesAnOrdinaryFailure() {
        for value in ["", "soon", "-5", "1.5", "5s", "Sun, 99 Nov 1994 08:49:37 GMT"] {
            #expect(Self.map(429, retryAfter: value) == .failure("HTTP 429", httpStatus: 429), "Retry-After: \(value)")
        }
    }

    @Test func retryAfterAsAnHTTPDateInAnyOfTheThreeFormsIsRelativeToNow() {
        let now = Self.rfcExampleDate
        for value in ["Sun, 06 Nov 1994 08:49:47 GMT", "Sunday, 06-Nov-94 08:49:47 GMT", "Sun Nov  6 08:49:47 1994"] {
            #expect(HTTPResponseMapping.retryDelay(value, now: now) == .seconds(10), "Retry-After: \(value)")
        }
        #expect(Self.map(503, retryAfter: "Sun, 06 Nov 1994 08:50:37 GMT", now: now) == .verdict(.retry(delay: .seconds(60)), error: "HTTP 503"))
    }

    @Test func aRetryAfterDateInThePastMeansRetryNow() {
        #expect(HTTPResponseMapping.retryDelay("Sun, 06 Nov 1994 08:49:37 GMT", now: Self.rfcExampleDate + 3600) == .zero)
    }

    @Test func hugeRetryAfterValuesAreCappedInsteadOfOverflowing() {
        let cap = HTTPResponseMapping.longestRetryDelay
        #expect(HTTPResponseMapping.retryDelay("99999999999999999999999999", now: Date()) == cap)
        #expect(HTTPResponseMapping.retryDelay("86401", now: Date()) == cap)
        #expect(HTTPResponseMapping.retryDelay("Fri, 01 Jan 2100 00:00:00 GMT", now: Self.rfcExampleDate) == cap)
    }
}
