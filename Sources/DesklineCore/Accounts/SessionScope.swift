/// Who a logged-in session is. Only ``AccountService/login(_:password:)`` can create one, so
/// tenant, user, role and customer always come from a successful login and never from anything
/// a client sends afterwards. Every service call that touches tenant data takes a scope.
public struct SessionScope: Sendable, Equatable {
    public let tenantId: TenantID
    public let userId: UserID
    public let role: Role
    /// Set for customers: the only customer record whose data this session may see.
    public let customerId: CustomerID?
    /// The connection acting, so events it causes are not echoed back to it (its answer is the
    /// `OK`). Not part of the identity: it changes nothing about what the session may do.
    public private(set) var sessionId: SessionID?

    /// The same identity, acting from connection `id`.
    public func onSession(_ id: SessionID) -> SessionScope {
        var copy = self
        copy.sessionId = id
        return copy
    }

    init(tenantId: TenantID, userId: UserID, role: Role, customerId: CustomerID?) {
        self.tenantId = tenantId
        self.userId = userId
        self.role = role
        self.customerId = customerId
    }
}
