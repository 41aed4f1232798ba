//! RBAC for requests authenticated as a ServiceAccount, decided the way kube-apiserver
//! decides them with its RBAC authorizer:
//!
//! - The request's attributes (verb, API group, resource, subresource, namespace, name)
//!   come from its method, path and query as the API server's `RequestInfoFactory`
//!   derives them: GET on one object is `get`, on a collection `list`, with
//!   `watch=true` (or `1`) `watch`; POST `create`, PUT `update`, PATCH `patch`, DELETE
//!   `delete` (`deletecollection` on a collection). A list or watch whose field
//!   selector pins `metadata.name` is about that name. Anything outside `/api` and
//!   `/apis` is a non-resource request (verb: the method, lower-cased; the path).
//! - It is allowed when a rule allows it of a ClusterRole bound by a
//!   ClusterRoleBinding, or of a Role or ClusterRole bound by a RoleBinding in the
//!   request's namespace, to the user, one of its groups, or its ServiceAccount
//!   (`apiGroups`, `resources` as `resource` or `resource/subresource` or `*` or
//!   `*/subresource`, `verbs`, `resourceNames` when the rule has any, `nonResourceURLs`
//!   with a trailing `*` as a prefix; `*` matches anything). A binding whose role does
//!   not exist grants nothing and is named in the denial (`RBAC: role… not found`).
//! - Every cluster's bootstrap policy lets any authenticated user read discovery
//!   (`system:discovery`, `system:public-info-viewer`); those two ClusterRoles and
//!   their bindings are always present.
//! - `pods/exec`, `pods/attach` and `pods/portforward` reached with GET (a WebSocket
//!   upgrade) are authorized as `get`, then also need `create`: the pod registry's
//!   compound check (`ensureAuthorizedForVerb`, feature
//!   AuthorizePodWebsocketUpgradeCreatePermission, beta and on by default from
//!   Kubernetes 1.35). Its denial reads `pods "x" is forbidden: ` followed by the
//!   authorizer's reason, which is empty unless a binding names a missing role.
//!
//! Denials are 403 `Status` objects with reason `Forbidden` and the API server's
//! message, e.g. `pods is forbidden: User "system:serviceaccount:gw:gw" cannot list
//! resource "pods" in API group "" in the namespace "default"`.

use std::collections::HashMap;

use serde_json::{Value, json};

/// The API group of RBAC objects and role references.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// Pod subresources a GET (WebSocket) request must also be allowed to `create`.
const CONNECT_SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// A ServiceAccount a bearer token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The user the API server sees: `system:serviceaccount:<ns>:<name>`, in the
    /// groups every ServiceAccount token carries.
    pub fn user(&self) -> User {
        User {
            name: format!("system:serviceaccount:{}:{}", self.namespace, self.name),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{}", self.namespace),
                "system:authenticated".to_owned(),
            ],
        }
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request asks to do, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub verb: String,
    /// False for paths outside `/api` and `/apis` (and their bare roots).
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped requests.
    pub namespace: String,
    /// Empty for collections.
    pub name: String,
}

impl Attributes {
    /// A resource request with these attributes (for tests and callers that know them).
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Self {
            verb: verb.to_owned(),
            resource_request: true,
            api_group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// As the API server's `RequestInfoFactory.NewRequestInfo` reads a request.
    pub fn of_request(method: &str, path: &str, query: Option<&str>) -> Self {
        let mut info = Attributes {
            verb: method.to_ascii_lowercase(),
            path: path.to_owned(),
            ..Default::default()
        };
        let mut parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return info;
        }
        let grouped = parts[0] == "apis";
        parts.remove(0);
        if grouped {
            if parts.len() < 3 {
                return info;
            }
            info.api_group = parts.remove(0).to_owned();
        }
        info.resource_request = true;
        info.api_version = parts.remove(0).to_owned();
        // The deprecated `/watch/…` and `/proxy/…` forms carry their verb in the path.
        let special = matches!(parts[0], "watch" | "proxy");
        if special {
            if parts.len() < 2 {
                return info;
            }
            info.verb = parts.remove(0).to_owned();
        } else {
            info.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_owned();
        }
        if parts[0] == "namespaces" && parts.len() > 1 {
            info.namespace = parts[1].to_owned();
            // `namespaces/<ns>/status` and `/finalize` are the namespace's own.
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
        if parts.len() >= 3 && info.verb != "proxy" {
            info.subresource = parts[2].to_owned();
        }
        if parts.len() >= 2 {
            info.name = parts[1].to_owned();
        }
        info.resource = parts[0].to_owned();
        if info.name.is_empty() && info.verb == "get" {
            let (watch, name) = list_options(query);
            info.verb = if watch { "watch" } else { "list" }.to_owned();
            if let Some(name) = name {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_owned();
        }
        info
    }

    /// `resource` or `resource/subresource`, as rules and messages name it.
    fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// `watch` and the name a `metadata.name` field selector requires, from a list query.
fn list_options(query: Option<&str>) -> (bool, Option<String>) {
    let (mut watch, mut name) = (false, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "watch" => watch = !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "f"),
            "fieldSelector" => {
                name = v.split(',').find_map(|term| {
                    let term = term.trim();
                    let value = term
                        .strip_prefix("metadata.name==")
                        .or_else(|| term.strip_prefix("metadata.name="))?;
                    // Only a name that can be a path segment (path.IsValidPathSegmentName).
                    let valid = !value.is_empty()
                        && value != "."
                        && value != ".."
                        && !value.contains(['/', '%']);
                    valid.then(|| value.to_owned())
                })
            }
            _ => {}
        }
    }
    (watch, name)
}

/// One PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    fn from_json(rule: &Value) -> Result<Self, String> {
        let list = |field: &str| -> Result<Vec<String>, String> {
            match &rule[field] {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("rules[].{field} holds {v}, not a string"))
                    })
                    .collect(),
                other => Err(format!("rules[].{field} is {other}, not a list")),
            }
        };
        Ok(Rule {
            verbs: list("verbs")?,
            api_groups: list("apiGroups")?,
            resources: list("resources")?,
            resource_names: list("resourceNames")?,
            non_resource_urls: list("nonResourceURLs")?,
        })
    }

    /// rbac.RuleAllows.
    pub fn allows(&self, a: &Attributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        if !a.resource_request {
            return verb
                && self.non_resource_urls.iter().any(|url| {
                    url == "*"
                        || *url == a.path
                        || url
                            .strip_suffix('*')
                            .is_some_and(|prefix| a.path.starts_with(prefix))
                });
        }
        let combined = a.combined_resource();
        verb && self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group)
            && self.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!a.subresource.is_empty()
                        && r.strip_prefix("*/") == Some(a.subresource.as_str()))
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }
}

#[derive(Debug, Clone)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

impl Subject {
    /// rbac.appliesToUser; `namespace` is the RoleBinding's (empty for a
    /// ClusterRoleBinding), the default for a ServiceAccount subject without one.
    fn applies_to(&self, user: &User, namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.name == self.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    namespace
                } else {
                    &self.namespace
                };
                !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", self.name)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    name: String,
    /// Empty for a ClusterRoleBinding.
    namespace: String,
    /// `Role` or `ClusterRole`.
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn applies_to(&self, user: &User) -> bool {
        self.subjects
            .iter()
            .any(|s| s.applies_to(user, &self.namespace))
    }
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No rule allows it; the authorizer's reason (often empty).
    Deny(String),
}

/// A denial, as the API server writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub message: String,
    /// The Status `details`: group, kind (the resource) and name, each when not empty.
    pub details: Value,
}

/// An RBAC policy and the ServiceAccount tokens it applies to.
#[derive(Debug, Clone)]
pub struct Rbac {
    cluster_roles: HashMap<String, Vec<Rule>>,
    roles: HashMap<(String, String), Vec<Rule>>,
    cluster_bindings: Vec<Binding>,
    bindings: Vec<Binding>,
    tokens: HashMap<String, ServiceAccount>,
}

impl Default for Rbac {
    fn default() -> Self {
        Self::new()
    }
}

impl Rbac {
    /// The bootstrap policy alone: discovery for every authenticated user.
    pub fn new() -> Self {
        let mut rbac = Rbac {
            cluster_roles: HashMap::new(),
            roles: HashMap::new(),
            cluster_bindings: Vec::new(),
            bindings: Vec::new(),
            tokens: HashMap::new(),
        };
        let urls = |urls: &[&str]| Rule {
            verbs: vec!["get".to_owned()],
            non_resource_urls: urls.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        };
        rbac.cluster_roles.insert(
            "system:discovery".to_owned(),
            vec![urls(&[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ])],
        );
        rbac.cluster_roles.insert(
            "system:public-info-viewer".to_owned(),
            vec![urls(&[
                "/healthz",
                "/livez",
                "/readyz",
                "/version",
                "/version/",
            ])],
        );
        for (role, groups) in [
            ("system:discovery", &["system:authenticated"][..]),
            (
                "system:public-info-viewer",
                &["system:authenticated", "system:unauthenticated"][..],
            ),
        ] {
            rbac.cluster_bindings.push(Binding {
                name: role.to_owned(),
                namespace: String::new(),
                role_kind: "ClusterRole".to_owned(),
                role_name: role.to_owned(),
                subjects: groups
                    .iter()
                    .map(|g| Subject {
                        kind: "Group".to_owned(),
                        name: g.to_string(),
                        namespace: String::new(),
                    })
                    .collect(),
            });
        }
        rbac
    }

    /// The bootstrap policy plus every Role, RoleBinding, ClusterRole and
    /// ClusterRoleBinding among `objects` (other kinds are skipped, so a chart's whole
    /// rendering can be passed), as `kubectl apply -n namespace` would create them:
    /// namespaced objects without a namespace land in `namespace`.
    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = &'a Value>,
        namespace: &str,
    ) -> Result<Self, String> {
        let mut rbac = Self::new();
        for object in objects {
            rbac.add(object, namespace)?;
        }
        Ok(rbac)
    }

    /// Adds (or replaces) one RBAC object; false when it is not one.
    pub fn add(&mut self, object: &Value, namespace: &str) -> Result<bool, String> {
        let kind = object["kind"].as_str().unwrap_or_default();
        let is_rbac = object["apiVersion"]
            .as_str()
            .is_some_and(|v| v.split('/').next() == Some(RBAC_GROUP));
        if !is_rbac {
            return Ok(false);
        }
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("a {kind} without metadata.name"))?
            .to_owned();
        let ns = object["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace)
            .to_owned();
        let rules = || -> Result<Vec<Rule>, String> {
            match &object["rules"] {
                Value::Null => Ok(Vec::new()),
                Value::Array(rules) => rules.iter().map(Rule::from_json).collect(),
                other => Err(format!("{kind} {name}: rules is {other}")),
            }
        };
        match kind {
            "ClusterRole" => {
                let rules = rules()?;
                self.cluster_roles.insert(name, rules);
            }
            "Role" => {
                let rules = rules()?;
                self.roles.insert((ns, name), rules);
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let role_ref = &object["roleRef"];
                let role_kind = role_ref["kind"].as_str().unwrap_or_default().to_owned();
                let allowed = if kind == "RoleBinding" {
                    &["Role", "ClusterRole"][..]
                } else {
                    &["ClusterRole"][..]
                };
                if !allowed.contains(&role_kind.as_str()) {
                    return Err(format!(
                        "{kind} {name}: roleRef.kind {role_kind:?} is not one of {allowed:?}"
                    ));
                }
                let subjects = object["subjects"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| Subject {
                        kind: s["kind"].as_str().unwrap_or_default().to_owned(),
                        name: s["name"].as_str().unwrap_or_default().to_owned(),
                        namespace: s["namespace"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect();
                let binding = Binding {
                    name,
                    namespace: if kind == "RoleBinding" {
                        ns
                    } else {
                        String::new()
                    },
                    role_kind,
                    role_name: role_ref["name"].as_str().unwrap_or_default().to_owned(),
                    subjects,
                };
                // Names are unique per kind and namespace: a second one replaces it.
                let list = if kind == "RoleBinding" {
                    &mut self.bindings
                } else {
                    &mut self.cluster_bindings
                };
                list.retain(|b| (&b.namespace, &b.name) != (&binding.namespace, &binding.name));
                list.push(binding);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Bearer `token` authenticates as `account`.
    pub fn with_service_account(mut self, token: &str, account: ServiceAccount) -> Self {
        self.tokens.insert(token.to_owned(), account);
        self
    }

    /// Whom `token` authenticates, if it is one of this policy's.
    pub fn account(&self, token: &str) -> Option<&ServiceAccount> {
        self.tokens.get(token)
    }

    /// The RBAC authorizer's decision on `a` for `user`.
    pub fn authorize(&self, user: &User, a: &Attributes) -> Decision {
        let mut errors: Vec<String> = Vec::new();
        let mut rules_of = |binding: &Binding| -> Option<&Vec<Rule>> {
            let found = if binding.role_kind == "Role" {
                self.roles
                    .get(&(binding.namespace.clone(), binding.role_name.clone()))
            } else {
                self.cluster_roles.get(&binding.role_name)
            };
            if found.is_none() {
                let kind = binding.role_kind.to_ascii_lowercase();
                let error = format!("{kind}.{RBAC_GROUP} \"{}\" not found", binding.role_name);
                if !errors.contains(&error) {
                    errors.push(error);
                }
            }
            found
        };
        let namespaced = self
            .bindings
            .iter()
            .filter(|b| !a.namespace.is_empty() && b.namespace == a.namespace);
        for binding in self.cluster_bindings.iter().chain(namespaced) {
            if !binding.applies_to(user) {
                continue;
            }
            if rules_of(binding).is_some_and(|rules| rules.iter().any(|r| r.allows(a))) {
                return Decision::Allow;
            }
        }
        // utilerrors.NewAggregate: one message alone, several in brackets.
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        Decision::Deny(reason)
    }

    /// What the API server does before serving the request: the authorization
    /// filter, then for a GET on a pod's exec, attach or portforward the compound
    /// `create` check. `Err` is the Status to answer with.
    pub fn admit(&self, user: &User, a: &Attributes) -> Result<(), Forbidden> {
        if let Decision::Deny(reason) = self.authorize(user, a) {
            return Err(forbidden(user, a, &reason));
        }
        let connect = a.resource_request
            && a.api_group.is_empty()
            && a.resource == "pods"
            && CONNECT_SUBRESOURCES.contains(&a.subresource.as_str());
        if connect && a.verb != "create" {
            let create = Attributes {
                verb: "create".to_owned(),
                ..a.clone()
            };
            if let Decision::Deny(reason) = self.authorize(user, &create) {
                // apierrors.NewForbidden(pods, name, errors.New(reason)).
                return Err(Forbidden {
                    message: format!("{} is forbidden: {reason}", qualified(a)),
                    details: details(a),
                });
            }
        }
        Ok(())
    }
}

/// Go's `%q` of a string, for the names and paths messages quote.
fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `resource[.group]` and the quoted name when there is one, as
/// apierrors.NewForbidden starts its message about a resource.
fn qualified(a: &Attributes) -> String {
    let resource = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    if a.name.is_empty() {
        resource
    } else {
        format!("{resource} {}", quote(&a.name))
    }
}

fn details(a: &Attributes) -> Value {
    let mut details = serde_json::Map::new();
    if !a.name.is_empty() {
        details.insert("name".into(), json!(a.name));
    }
    if a.resource_request && !a.api_group.is_empty() {
        details.insert("group".into(), json!(a.api_group));
    }
    if a.resource_request && !a.resource.is_empty() {
        details.insert("kind".into(), json!(a.resource));
    }
    Value::Object(details)
}

/// responsewriters.Forbidden: what the authorization filter answers.
pub fn forbidden(user: &User, a: &Attributes, reason: &str) -> Forbidden {
    let mut why = if !a.resource_request {
        format!(
            "User {} cannot {} path {}",
            quote(&user.name),
            a.verb,
            quote(&a.path)
        )
    } else {
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {}", quote(&a.namespace))
        };
        format!(
            "User {} cannot {} resource {} in API group {} {scope}",
            quote(&user.name),
            a.verb,
            quote(&a.combined_resource()),
            quote(&a.api_group),
        )
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let message = if !a.resource_request || a.resource.is_empty() {
        format!("forbidden: {why}")
    } else {
        format!("{} is forbidden: {why}", qualified(a))
    };
    Forbidden {
        message,
        details: details(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA_NS: &str = "gw";
    const SA: &str = "gw-ssh-gateway";

    fn sa() -> User {
        ServiceAccount::new(SA_NS, SA).user()
    }

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
        json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
    }

    fn role(kind: &str, ns: Option<&str>, name: &str, rules: Vec<Value>) -> Value {
        let mut meta = json!({"name": name});
        if let Some(ns) = ns {
            meta["namespace"] = json!(ns);
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules})
    }

    fn binding(
        kind: &str,
        ns: Option<&str>,
        role_kind: &str,
        role: &str,
        subjects: Value,
    ) -> Value {
        let mut meta = json!({"name": format!("{role}-binding")});
        if let Some(ns) = ns {
            meta["namespace"] = json!(ns);
        }
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects,
        })
    }

    fn our_sa() -> Value {
        json!([{"kind": "ServiceAccount", "name": SA, "namespace": SA_NS}])
    }

    /// The chart's rules.
    fn chart_rules() -> Vec<Value> {
        vec![
            rule(&[""], &["pods"], &["get", "list", "watch"]),
            rule(
                &[""],
                &["pods/exec", "pods/portforward"],
                &["create", "get"],
            ),
            rule(
                &["apps"],
                &["statefulsets"],
                &["get", "list", "watch", "patch"],
            ),
            rule(&["apps"], &["statefulsets/scale"], &["patch"]),
        ]
    }

    fn policy(objects: &[Value]) -> Rbac {
        Rbac::from_objects(objects, "default").unwrap()
    }

    fn allowed(rbac: &Rbac, a: &Attributes) -> bool {
        rbac.authorize(&sa(), a) == Decision::Allow
    }

    #[test]
    fn attributes_follow_the_request_info_factory() {
        // (verb, group, resource[/sub], namespace, name)
        type Want = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
        );
        let cases: &[(&str, &str, Option<&str>, Want)] = &[
            // method, path, query -> verb, group, resource[/sub], namespace, name
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                Some("labelSelector=a%3Db"),
                ("list", "", "pods", "default", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                Some("watch=true&resourceVersion=5"),
                ("watch", "", "pods", "default", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                Some("watch=1"),
                ("watch", "", "pods", "default", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                Some("watch=false"),
                ("list", "", "pods", "default", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                Some("fieldSelector=metadata.name%3Dp1"),
                ("list", "", "pods", "default", "p1"),
            ),
            ("GET", "/api/v1/pods", None, ("list", "", "pods", "", "")),
            (
                "GET",
                "/api/v1/namespaces/default/pods/p1",
                None,
                ("get", "", "pods", "default", "p1"),
            ),
            (
                "HEAD",
                "/api/v1/namespaces/default/pods/p1",
                None,
                ("get", "", "pods", "default", "p1"),
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/p1/exec",
                Some("command=sh"),
                ("get", "", "pods/exec", "default", "p1"),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/p1/portforward",
                None,
                ("create", "", "pods/portforward", "default", "p1"),
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods",
                None,
                ("create", "", "pods", "default", ""),
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/ns/statefulsets/s/scale",
                None,
                ("update", "apps", "statefulsets/scale", "ns", "s"),
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/ns/statefulsets/s",
                None,
                ("patch", "apps", "statefulsets", "ns", "s"),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/ns/statefulsets/s",
                None,
                ("delete", "apps", "statefulsets", "ns", "s"),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/ns/statefulsets",
                None,
                ("deletecollection", "apps", "statefulsets", "ns", ""),
            ),
            (
                "GET",
                "/apis/apps/v1/statefulsets",
                Some("watch=true"),
                ("watch", "apps", "statefulsets", "", ""),
            ),
            // The deprecated watch path, and a namespace itself.
            (
                "GET",
                "/api/v1/watch/namespaces/default/pods",
                None,
                ("watch", "", "pods", "default", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/default",
                None,
                ("get", "", "namespaces", "default", "default"),
            ),
            (
                "PUT",
                "/api/v1/namespaces/default/finalize",
                None,
                ("update", "", "namespaces/finalize", "default", "default"),
            ),
        ];
        for (method, path, query, (verb, group, resource, ns, name)) in cases {
            let got = Attributes::of_request(method, path, *query);
            let mut want = Attributes::resource(verb, group, resource, ns, name);
            want.path = path.to_string();
            want.api_version = got.api_version.clone();
            assert_eq!(got, want, "{method} {path} {query:?}");
            assert_eq!(got.api_version, "v1");
        }
        // Discovery and everything outside /api and /apis are non-resource requests.
        for path in [
            "/api",
            "/api/v1",
            "/apis/apps",
            "/version",
            "/openapi/v3/api/v1",
        ] {
            let got = Attributes::of_request("GET", path, None);
            assert!(!got.resource_request, "{path}");
            assert_eq!((got.verb.as_str(), got.path.as_str()), ("get", path));
        }
    }

    #[test]
    fn the_charts_role_allows_exactly_its_rules() {
        let rbac = policy(&[
            role("Role", Some("default"), "gw", chart_rules()),
            binding("RoleBinding", Some("default"), "Role", "gw", our_sa()),
        ]);
        let r = |verb: &str, group: &str, resource: &str, ns: &str, name: &str| {
            allowed(
                &rbac,
                &Attributes::resource(verb, group, resource, ns, name),
            )
        };
        // (verb, group, resource, namespace, name, allowed)
        let table = [
            ("list", "", "pods", "default", "", true),
            ("watch", "", "pods", "default", "", true),
            ("get", "", "pods", "default", "p", true),
            ("create", "", "pods/exec", "default", "p", true),
            ("get", "", "pods/exec", "default", "p", true),
            ("create", "", "pods/portforward", "default", "p", true),
            ("patch", "apps", "statefulsets", "default", "s", true),
            ("patch", "apps", "statefulsets/scale", "default", "s", true),
            // Not granted: other verbs, subresources, groups, namespaces, scopes.
            ("delete", "", "pods", "default", "p", false),
            ("create", "", "pods", "default", "", false),
            ("create", "", "pods/attach", "default", "p", false),
            ("get", "", "pods/log", "default", "p", false),
            (
                "update",
                "apps",
                "statefulsets/scale",
                "default",
                "s",
                false,
            ),
            ("get", "apps", "statefulsets/scale", "default", "s", false),
            ("get", "", "statefulsets", "default", "s", false),
            ("get", "apps", "pods", "default", "p", false),
            ("list", "", "pods", "other", "", false),
            ("list", "", "pods", "", "", false),
            ("get", "", "secrets", "default", "x", false),
        ];
        for (verb, group, resource, ns, name, want) in table {
            assert_eq!(
                r(verb, group, resource, ns, name),
                want,
                "{verb} {group}/{resource} in {ns:?} {name:?}"
            );
        }
        // Another ServiceAccount, or ours in another namespace, gets nothing.
        let other = ServiceAccount::new("default", SA).user();
        let a = Attributes::resource("list", "", "pods", "default", "");
        assert!(matches!(rbac.authorize(&other, &a), Decision::Deny(_)));
    }

    #[test]
    fn wildcards_subresources_and_resource_names() {
        let rbac = policy(&[
            role(
                "Role",
                Some("default"),
                "wild",
                vec![
                    rule(&["*"], &["configmaps"], &["*"]),
                    rule(&[""], &["*/status"], &["get"]),
                    json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                           "resourceNames": ["mine"]}),
                ],
            ),
            binding("RoleBinding", Some("default"), "Role", "wild", our_sa()),
            role(
                "Role",
                Some("all"),
                "everything",
                vec![rule(&["*"], &["*"], &["*"])],
            ),
            binding("RoleBinding", Some("all"), "Role", "everything", our_sa()),
        ]);
        let table = [
            // `*` verbs and groups.
            ("delete", "", "configmaps", "default", "c", true),
            (
                "list",
                "anything.example.com",
                "configmaps",
                "default",
                "",
                true,
            ),
            // `*/status` is any resource's status subresource, and nothing else.
            ("get", "", "pods/status", "default", "p", true),
            ("get", "", "services/status", "default", "s", true),
            ("get", "", "pods", "default", "p", false),
            ("get", "", "pods/exec", "default", "p", false),
            ("patch", "", "pods/status", "default", "p", false),
            // resourceNames: that name only, and so never a collection.
            ("get", "", "secrets", "default", "mine", true),
            ("get", "", "secrets", "default", "theirs", false),
            ("list", "", "secrets", "default", "", false),
            // `*` resources include subresources.
            ("create", "", "pods/exec", "all", "p", true),
            ("patch", "apps", "statefulsets/scale", "all", "s", true),
            ("create", "", "pods/exec", "default", "p", false),
        ];
        for (verb, group, resource, ns, name, want) in table {
            let a = Attributes::resource(verb, group, resource, ns, name);
            assert_eq!(
                allowed(&rbac, &a),
                want,
                "{verb} {group}/{resource} in {ns:?} {name:?}"
            );
        }
    }

    #[test]
    fn cluster_and_namespaced_bindings() {
        let reader = role(
            "ClusterRole",
            None,
            "pod-reader",
            vec![rule(&[""], &["pods"], &["get", "list"])],
        );
        // A RoleBinding to a ClusterRole grants its rules in that namespace only.
        let rbac = policy(&[
            reader.clone(),
            binding(
                "RoleBinding",
                Some("team-a"),
                "ClusterRole",
                "pod-reader",
                our_sa(),
            ),
        ]);
        let list = |ns: &str| Attributes::resource("list", "", "pods", ns, "");
        assert!(allowed(&rbac, &list("team-a")));
        assert!(!allowed(&rbac, &list("team-b")));
        assert!(!allowed(&rbac, &list("")), "not cluster-wide");

        // A ClusterRoleBinding grants them everywhere, cluster scope included.
        let rbac = policy(&[
            reader.clone(),
            binding(
                "ClusterRoleBinding",
                None,
                "ClusterRole",
                "pod-reader",
                our_sa(),
            ),
        ]);
        assert!(allowed(&rbac, &list("team-a")));
        assert!(allowed(&rbac, &list("team-b")));
        assert!(allowed(&rbac, &list("")));

        // A Role is its own namespace's: a RoleBinding elsewhere cannot use it.
        let rbac = policy(&[
            role(
                "Role",
                Some("team-a"),
                "local",
                vec![rule(&[""], &["pods"], &["list"])],
            ),
            binding("RoleBinding", Some("team-b"), "Role", "local", our_sa()),
        ]);
        assert!(!allowed(&rbac, &list("team-a")));
        assert_eq!(
            rbac.authorize(&sa(), &list("team-b")),
            Decision::Deny("RBAC: role.rbac.authorization.k8s.io \"local\" not found".into())
        );

        // Objects without a namespace land in the one given, as `kubectl apply -n`.
        let rbac = policy(&[
            role("Role", None, "r", vec![rule(&[""], &["pods"], &["list"])]),
            binding("RoleBinding", None, "Role", "r", our_sa()),
        ]);
        assert!(allowed(&rbac, &list("default")));

        // Subjects: a ServiceAccount without a namespace is the RoleBinding's own; in
        // a ClusterRoleBinding it names nobody. Groups and users match by name.
        let in_gw = |subjects: Value| {
            policy(&[
                reader.clone(),
                binding(
                    "RoleBinding",
                    Some(SA_NS),
                    "ClusterRole",
                    "pod-reader",
                    subjects,
                ),
            ])
        };
        assert!(allowed(
            &in_gw(json!([{"kind": "ServiceAccount", "name": SA}])),
            &list(SA_NS)
        ));
        let cluster = policy(&[
            reader.clone(),
            binding(
                "ClusterRoleBinding",
                None,
                "ClusterRole",
                "pod-reader",
                json!([{"kind": "ServiceAccount", "name": SA}]),
            ),
        ]);
        assert!(!allowed(&cluster, &list(SA_NS)));
        for subjects in [
            json!([{"kind": "Group", "name": "system:serviceaccounts:gw"}]),
            json!([{"kind": "Group", "name": "system:authenticated"}]),
            json!([{"kind": "User", "name": "system:serviceaccount:gw:gw-ssh-gateway"}]),
        ] {
            assert!(
                allowed(&in_gw(subjects.clone()), &list(SA_NS)),
                "{subjects}"
            );
        }
        for subjects in [
            json!([{"kind": "Group", "name": "system:serviceaccounts:other"}]),
            json!([{"kind": "ServiceAccount", "name": SA, "namespace": "other"}]),
            json!([{"kind": "User", "name": SA}]),
        ] {
            assert!(
                !allowed(&in_gw(subjects.clone()), &list(SA_NS)),
                "{subjects}"
            );
        }
    }

    #[test]
    fn bindings_to_missing_roles_are_named_in_the_reason() {
        let rbac = policy(&[
            binding("ClusterRoleBinding", None, "ClusterRole", "gone", our_sa()),
            binding("RoleBinding", Some("default"), "Role", "absent", our_sa()),
        ]);
        let a = Attributes::resource("list", "", "pods", "default", "");
        assert_eq!(
            rbac.authorize(&sa(), &a),
            Decision::Deny(
                "RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, \
                 role.rbac.authorization.k8s.io \"absent\" not found]"
                    .into()
            )
        );
        let f = rbac.admit(&sa(), &a).unwrap_err();
        assert!(
            f.message.ends_with(
                "in the namespace \"default\": RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, role.rbac.authorization.k8s.io \"absent\" not found]"
            ),
            "{}",
            f.message
        );
        // A binding of the wrong shape is refused when loaded.
        let bad = binding("ClusterRoleBinding", None, "Role", "r", our_sa());
        assert!(Rbac::from_objects([&bad], "default").is_err());
    }

    #[test]
    fn denials_read_as_the_api_servers() {
        let rbac = policy(&[
            role("Role", Some("default"), "gw", chart_rules()),
            binding("RoleBinding", Some("default"), "Role", "gw", our_sa()),
        ]);
        let admit = |method: &str, path: &str, query: Option<&str>| {
            rbac.admit(&sa(), &Attributes::of_request(method, path, query))
        };
        let user = "User \"system:serviceaccount:gw:gw-ssh-gateway\"";
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/kube-system/pods",
                None,
                format!(
                    "pods is forbidden: {user} cannot list resource \"pods\" in API group \"\" in the namespace \"kube-system\""
                ),
                json!({"kind": "pods"}),
            ),
            (
                "GET",
                "/api/v1/pods",
                Some("watch=true"),
                format!(
                    "pods is forbidden: {user} cannot watch resource \"pods\" in API group \"\" at the cluster scope"
                ),
                json!({"kind": "pods"}),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods/x",
                None,
                format!(
                    "pods \"x\" is forbidden: {user} cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
                ),
                json!({"kind": "pods", "name": "x"}),
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/default/statefulsets/s/scale",
                None,
                format!(
                    "statefulsets.apps \"s\" is forbidden: {user} cannot update resource \"statefulsets/scale\" in API group \"apps\" in the namespace \"default\""
                ),
                json!({"group": "apps", "kind": "statefulsets", "name": "s"}),
            ),
            (
                "GET",
                "/metrics",
                None,
                format!("forbidden: {user} cannot get path \"/metrics\""),
                json!({}),
            ),
        ];
        for (method, path, query, message, details) in cases {
            let f = admit(method, path, query).unwrap_err();
            assert_eq!(f.message, message, "{method} {path}");
            assert_eq!(f.details, details, "{method} {path}");
        }
        // Discovery is every authenticated user's, as the bootstrap policy has it.
        for path in [
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
        ] {
            assert!(admit("GET", path, None).is_ok(), "{path}");
        }
        assert!(admit("POST", "/api", None).is_err());
    }

    #[test]
    fn websocket_exec_and_portforward_need_get_and_create() {
        let only = |verbs: &[&str]| {
            policy(&[
                role(
                    "Role",
                    Some("default"),
                    "r",
                    vec![rule(&[""], &["pods/exec", "pods/portforward"], verbs)],
                ),
                binding("RoleBinding", Some("default"), "Role", "r", our_sa()),
            ])
        };
        let user = "User \"system:serviceaccount:gw:gw-ssh-gateway\"";
        for sub in ["exec", "portforward"] {
            let path = format!("/api/v1/namespaces/default/pods/p/{sub}");
            let ws = Attributes::of_request("GET", &path, Some("stdout=true"));
            let spdy = Attributes::of_request("POST", &path, None);
            // Both verbs: both protocols.
            assert!(only(&["create", "get"]).admit(&sa(), &ws).is_ok());
            assert!(only(&["create", "get"]).admit(&sa(), &spdy).is_ok());
            // `get` alone (enough before 1.35): the compound check refuses, with
            // the pod registry's bare message.
            let f = only(&["get"]).admit(&sa(), &ws).unwrap_err();
            assert_eq!(f.message, "pods \"p\" is forbidden: ", "{sub}");
            assert_eq!(f.details, json!({"kind": "pods", "name": "p"}));
            // `create` alone: the filter refuses the GET as `get`; SPDY's POST is fine.
            let f = only(&["create"]).admit(&sa(), &ws).unwrap_err();
            assert_eq!(
                f.message,
                format!(
                    "pods \"p\" is forbidden: {user} cannot get resource \"pods/{sub}\" in API group \"\" in the namespace \"default\""
                )
            );
            assert!(only(&["create"]).admit(&sa(), &spdy).is_ok());
        }
        // Other pod subresources have no compound check.
        let rbac = policy(&[
            role(
                "Role",
                Some("default"),
                "r",
                vec![rule(&[""], &["pods/log"], &["get"])],
            ),
            binding("RoleBinding", Some("default"), "Role", "r", our_sa()),
        ]);
        let log = Attributes::of_request("GET", "/api/v1/namespaces/default/pods/p/log", None);
        assert!(rbac.admit(&sa(), &log).is_ok());
    }

    #[test]
    fn tokens_name_their_service_accounts() {
        let rbac = Rbac::new().with_service_account("t0ken", ServiceAccount::new(SA_NS, SA));
        assert_eq!(
            rbac.account("t0ken")
                .map(ServiceAccount::user)
                .unwrap()
                .name,
            "system:serviceaccount:gw:gw-ssh-gateway"
        );
        assert!(rbac.account("other").is_none());
        // Only RBAC objects are taken from a whole rendering.
        let mixed = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            role("Role", Some("default"), "r", vec![]),
        ];
        let mut rbac = Rbac::new();
        let added: Vec<bool> = mixed
            .iter()
            .map(|o| rbac.add(o, "default").unwrap())
            .collect();
        assert_eq!(added, [false, true]);
    }
}
