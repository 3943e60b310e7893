//! Image templating as KMM does it: `github.com/a8m/envsubst` v1.4.2's parser, with no
//! restrictions (kmm-api.md §5.2, `ReplaceInTemplates`). Reimplemented from the behaviour of that
//! lexer and parser so that the odd corners come out the same:
//! - `$VAR` and `${VAR}`; unknown or unset variables become "".
//! - `${VAR:-x}` / `${VAR:=x}`: x when VAR is unset or empty; `${VAR-x}` / `${VAR=x}`: x when
//!   unset; `${VAR+x}` / `${VAR:+x}`: x when set, else "". `x` may be `$OTHER`.
//! - `$$` is a literal `$`; a `$` not followed by a name or `{` stays as it is; `$_` is text.
//! - `${` without its `}` on the same line is an error: KMM then refuses the Module.
//! - Anything else inside `${…}` after the name (`${VAR:x}`, `${VAR?x}`) is ignored.

/// The lexer's item kinds, in the order the parser compares them (`>= Plus` means "an
/// operator or later").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Error,
    Eof,
    Text,
    Plus,
    Dash,
    Equals,
    ColonEquals,
    ColonDash,
    ColonPlus,
    Variable,
    LeftDelim,
    RightDelim,
}

#[derive(Debug, Clone)]
struct Item {
    kind: Kind,
    /// The input the item covers (for Error: the message).
    value: String,
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

#[derive(Clone, Copy)]
enum State {
    Text,
    Variable,
    Operator,
    Substitution,
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    start: usize,
    /// Start of the most recently emitted item.
    last: usize,
    width: usize,
    depth: usize,
    items: Vec<Item>,
}

impl Lexer<'_> {
    fn next(&mut self) -> Option<char> {
        let c = self.input[self.pos..].chars().next();
        self.width = c.map_or(0, char::len_utf8);
        self.pos += self.width;
        c
    }

    fn peek(&mut self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn backup(&mut self) {
        self.pos -= self.width;
    }

    fn emit(&mut self, kind: Kind) {
        self.items.push(Item {
            kind,
            value: self.input[self.start..self.pos].to_string(),
        });
        self.last = self.start;
        self.start = self.pos;
    }

    fn after_left_delim(&self) -> bool {
        self.input[self.last..].starts_with("${")
    }

    fn error(&mut self, message: &str) -> Option<State> {
        self.items.push(Item {
            kind: Kind::Error,
            value: message.into(),
        });
        None
    }

    fn text(&mut self) -> Option<State> {
        loop {
            match self.next() {
                Some('$') => {
                    let dollar = self.pos - 1;
                    if dollar > self.start {
                        self.pos = dollar;
                        self.emit(Kind::Text);
                        self.pos = dollar + 1;
                    }
                    match self.peek() {
                        Some('$') => {
                            // `$$`: drop the first, keep the second as text.
                            self.start = self.pos;
                            self.next();
                            self.emit(Kind::Text);
                        }
                        Some('{') => {
                            self.next();
                            self.depth += 1;
                            self.emit(Kind::LeftDelim);
                            return Some(State::Operator);
                        }
                        Some(c) if is_name_char(c) => return Some(State::Variable),
                        _ => {}
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        if self.pos > self.start {
            self.emit(Kind::Text);
        }
        self.emit(Kind::Eof);
        None
    }

    fn variable(&mut self) -> Option<State> {
        while let Some(c) = self.next() {
            if !is_name_char(c) {
                self.backup();
                break;
            }
        }
        let value = &self.input[self.start..self.pos];
        if value == "_" || value == "$_" {
            return Some(State::Text);
        }
        self.emit(Kind::Variable);
        Some(if self.depth > 0 {
            State::Operator
        } else {
            State::Text
        })
    }

    fn operator(&mut self) -> Option<State> {
        match self.next() {
            Some('}') => {
                self.depth -= 1;
                self.emit(Kind::RightDelim);
                return Some(State::Text);
            }
            None | Some('\r' | '\n') => return self.error("closing brace expected"),
            Some(c) if is_name_char(c) && self.after_left_delim() => {
                return Some(State::Variable);
            }
            Some('+') => self.emit(Kind::Plus),
            Some('-') => self.emit(Kind::Dash),
            Some('=') => self.emit(Kind::Equals),
            Some(':') => match self.next() {
                Some('-') => self.emit(Kind::ColonDash),
                Some('=') => self.emit(Kind::ColonEquals),
                Some('+') => self.emit(Kind::ColonPlus),
                _ => {}
            },
            Some(_) => {}
        }
        Some(State::Substitution)
    }

    fn substitution(&mut self) -> Option<State> {
        match self.next() {
            Some('}') => {
                self.depth -= 1;
                self.emit(Kind::RightDelim);
                Some(State::Text)
            }
            None | Some('\r' | '\n') => self.error("closing brace expected"),
            Some(c) if is_name_char(c) && self.after_left_delim() => Some(State::Variable),
            Some('$') => Some(State::Variable),
            Some(_) => {
                self.emit(Kind::Text);
                Some(State::Substitution)
            }
        }
    }
}

fn lex(input: &str) -> Vec<Item> {
    let mut lexer = Lexer {
        input,
        pos: 0,
        start: 0,
        last: 0,
        width: 0,
        depth: 0,
        items: Vec::new(),
    };
    let mut state = Some(State::Text);
    while let Some(s) = state {
        state = match s {
            State::Text => lexer.text(),
            State::Variable => lexer.variable(),
            State::Operator => lexer.operator(),
            State::Substitution => lexer.substitution(),
        };
    }
    lexer.items
}

enum Node {
    Text(String),
    Variable(String),
    Substitution {
        operator: Option<Kind>,
        variable: String,
        default: Option<Box<Node>>,
    },
}

struct Env<'a>(&'a [(&'a str, String)]);

impl Env<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn render(&self, node: &Node) -> String {
        match node {
            Node::Text(text) => text.clone(),
            Node::Variable(name) => self.lookup(name).unwrap_or_default().to_string(),
            Node::Substitution {
                operator,
                variable,
                default,
            } => {
                let value = self.lookup(variable);
                if let (Some(op), Some(default)) = (operator, default)
                    && *op >= Kind::Plus
                {
                    match op {
                        Kind::ColonDash | Kind::ColonEquals => {
                            return match value {
                                Some(v) if !v.is_empty() => v.to_string(),
                                _ => self.render(default),
                            };
                        }
                        Kind::Plus | Kind::ColonPlus => {
                            return match value {
                                Some(_) => self.render(default),
                                None => String::new(),
                            };
                        }
                        _ if value.is_none() => return self.render(default),
                        _ => {}
                    }
                }
                value.unwrap_or_default().to_string()
            }
        }
    }
}

/// The parser over the lexer's items: top-level text and variables, and `${…}` actions.
fn parse(items: &[Item]) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    let mut i = 0;
    let next = |i: &mut usize| {
        let item = items.get(*i).cloned().unwrap_or(Item {
            kind: Kind::Eof,
            value: String::new(),
        });
        *i += 1;
        item
    };
    loop {
        let item = next(&mut i);
        match item.kind {
            Kind::Eof => break,
            Kind::Error => return Err(item.value),
            Kind::Variable => nodes.push(Node::Variable(
                item.value.strip_prefix('$').unwrap_or(&item.value).into(),
            )),
            Kind::LeftDelim if items.get(i).is_some_and(|n| n.kind == Kind::Variable) => {
                let variable = next(&mut i).value;
                let mut operator = None;
                let mut default = None;
                loop {
                    let item = next(&mut i);
                    match item.kind {
                        Kind::RightDelim => break,
                        Kind::Error => return Err(item.value),
                        // The lexer reports an error before any end of input inside `${`.
                        Kind::Eof => break,
                        Kind::Variable => {
                            default = Some(Box::new(Node::Variable(
                                item.value.strip_prefix('$').unwrap_or(&item.value).into(),
                            )));
                        }
                        Kind::Text => {
                            let mut text = item.value;
                            while let Some(peek) = items.get(i) {
                                if matches!(peek.kind, Kind::RightDelim | Kind::Error | Kind::Eof) {
                                    break;
                                }
                                text.push_str(&peek.value);
                                i += 1;
                            }
                            default = Some(Box::new(Node::Text(text)));
                        }
                        kind => operator = Some(kind),
                    }
                }
                nodes.push(Node::Substitution {
                    operator,
                    variable,
                    default,
                });
            }
            _ => nodes.push(Node::Text(item.value)),
        }
    }
    Ok(nodes)
}

/// Substitute `vars` into `template` as KMM does. The error is the parser's own message.
pub fn substitute(template: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let nodes = parse(&lex(template))?;
    let env = Env(vars);
    Ok(nodes.iter().map(|n| env.render(n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, String)> {
        vec![
            ("KERNEL_FULL_VERSION", "5.14.0-570.el9.x86_64_rt".into()),
            ("KERNEL_X", "5".into()),
            ("MOD_NAME", "mlx5".into()),
            ("EMPTY", String::new()),
        ]
    }

    fn sub(t: &str) -> String {
        substitute(t, &vars()).unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(
            sub("quay.io/v/$MOD_NAME:$KERNEL_FULL_VERSION"),
            "quay.io/v/mlx5:5.14.0-570.el9.x86_64_rt"
        );
        assert_eq!(
            sub("quay.io/v/${MOD_NAME}-k${KERNEL_X}:v1"),
            "quay.io/v/mlx5-k5:v1"
        );
        assert_eq!(sub("a:${UNSET}b$UNSET"), "a:b");
        assert_eq!(sub("no variables"), "no variables");
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(sub("${UNSET:-x}"), "x");
        assert_eq!(sub("${EMPTY:-x}"), "x");
        assert_eq!(sub("${MOD_NAME:-x}"), "mlx5");
        assert_eq!(sub("${UNSET-x}"), "x");
        assert_eq!(sub("${EMPTY-x}"), "");
        assert_eq!(sub("${UNSET:=x}"), "x");
        assert_eq!(sub("${EMPTY=x}"), "");
        assert_eq!(sub("${MOD_NAME+set}"), "set");
        assert_eq!(sub("${UNSET+set}"), "");
        assert_eq!(sub("${EMPTY:+set}"), "set");
        assert_eq!(sub("${UNSET:-$MOD_NAME}"), "mlx5");
        assert_eq!(sub("${UNSET:-a-b_c}"), "a-b_c");
        // Text after a variable default is taken literally, as the parser concatenates it.
        assert_eq!(sub("${UNSET:-x$MOD_NAME}"), "x$MOD_NAME");
    }

    #[test]
    fn dollars_and_odd_corners() {
        assert_eq!(sub("a$$b"), "a$b");
        assert_eq!(sub("cost $ 5"), "cost $ 5");
        assert_eq!(sub("end$"), "end$");
        assert_eq!(sub("$_"), "$_");
        assert_eq!(sub("${}"), "${}");
        assert_eq!(sub("${-x}"), "${-x}");
        assert_eq!(sub("${MOD_NAME:x}"), "mlx5");
        assert_eq!(sub("${MOD_NAME?err}"), "mlx5");
    }

    #[test]
    fn an_unclosed_brace_is_refused() {
        assert_eq!(
            substitute("quay.io/v/m:${KERNEL_FULL_VERSION", &vars()),
            Err("closing brace expected".to_string())
        );
        assert!(substitute("${MOD_NAME:-x\n}", &vars()).is_err());
        assert!(substitute("${", &vars()).is_err());
    }
}
