//! A small evaluator for the expr-lang subset KEDA's `scalingModifiers.formula` uses in practice.
//!
//! Supported: number literals, `true`/`false`/`nil`, trigger names, `+ - * / % ** ^`, unary `- + ! not`,
//! comparisons, `&& || and or`, `a ? b : c`, `??`, parentheses, list literals, `let x = e; body`, and the
//! functions `float int abs min max ceil floor round len sum count all any none` (the last four take a
//! list and a predicate over `#`, braces optional: `count([a, b], {# > 1})`). Operator precedence follows
//! expr-lang's table (`??` binds tightest, the ternary loosest). Anything else is a compile error
//! naming what is unsupported, so a formula never silently means something different from KEDA.

use std::collections::HashMap;

/// Why a formula failed to compile or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormulaError {
    /// The text does not parse.
    #[error("syntax error at {position}: {message}")]
    Syntax {
        /// 1-based character position.
        position: usize,
        /// What was expected.
        message: String,
    },
    /// An identifier is neither a known trigger nor a `let` binding.
    #[error("unknown name {0}")]
    UnknownName(String),
    /// A valid expr-lang construct ebb does not implement.
    #[error("unsupported in formula: {0}")]
    Unsupported(String),
    /// Evaluation failed (type mismatch, nil arithmetic, integer modulo by zero …).
    #[error("{0}")]
    Runtime(String),
}

/// A compiled formula.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    expr: Expr,
    source: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Bool(bool),
    Nil,
    Var(String),
    Local(usize),
    Pointer,
    List(Vec<Expr>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    Let(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    Coalesce,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Float,
    Int,
    Abs,
    Min,
    Max,
    Ceil,
    Floor,
    Round,
    Len,
    Sum,
    Count,
    All,
    Any,
    None,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "float" => Func::Float,
            "int" => Func::Int,
            "abs" => Func::Abs,
            "min" => Func::Min,
            "max" => Func::Max,
            "ceil" => Func::Ceil,
            "floor" => Func::Floor,
            "round" => Func::Round,
            "len" => Func::Len,
            "sum" => Func::Sum,
            "count" => Func::Count,
            "all" => Func::All,
            "any" => Func::Any,
            "none" => Func::None,
            _ => return None,
        })
    }

    fn takes_predicate(self) -> bool {
        matches!(self, Func::Count | Func::All | Func::Any | Func::None)
    }
}

// === lexer ===

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Punct(&'static str),
    End,
}

const PUNCTS: &[&str] = &[
    "??", "**", "<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "%", "^", "<", ">", "!", "?", ":",
    "(", ")", "[", "]", "{", "}", ",", ";", "=", "#",
];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, FormulaError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                    i += 1;
                }
            }
            if i < chars.len() && matches!(chars[i], 'e' | 'E') {
                let mut j = i + 1;
                if j < chars.len() && matches!(chars[j], '+' | '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let n = text.parse::<f64>().map_err(|_| FormulaError::Syntax {
                position: start + 1,
                message: format!("invalid number {text}"),
            })?;
            out.push((Tok::Num(n), start + 1));
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), start + 1));
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            return Err(FormulaError::Unsupported("string literals".to_string()));
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
            return Err(FormulaError::Syntax {
                position: start + 1,
                message: format!("unexpected character {c:?}"),
            });
        };
        i += p.chars().count();
        out.push((Tok::Punct(p), start + 1));
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

// === parser ===

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    vars: &'a [&'a str],
    locals: Vec<String>,
    in_predicate: bool,
    depth: usize,
}

/// Nesting limit, so hostile input cannot overflow the stack of the recursive parser.
const MAX_DEPTH: usize = 128;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn position(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, FormulaError> {
        Err(FormulaError::Syntax {
            position: self.position(),
            message: message.into(),
        })
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(q) if q == w)
    }

    fn expect(&mut self, p: &str) -> Result<(), FormulaError> {
        if self.is_punct(p) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(format!("expected {p:?}, found {}", describe(self.peek())))
        }
    }

    /// Top level: `let` bindings, then a ternary expression.
    fn expr(&mut self) -> Result<Expr, FormulaError> {
        if self.is_word("let") {
            self.pos += 1;
            let name = match self.next() {
                Tok::Ident(n) => n,
                other => return self.err(format!("expected a name after let, found {}", describe(&other))),
            };
            self.expect("=")?;
            let value = self.ternary()?;
            self.expect(";")?;
            self.locals.push(name);
            self.depth += 1;
            let body = if self.depth > MAX_DEPTH {
                self.err("formula nested too deeply")
            } else {
                self.expr()
            };
            self.depth -= 1;
            self.locals.pop();
            return Ok(Expr::Let(Box::new(value), Box::new(body?)));
        }
        self.ternary()
    }

    fn ternary(&mut self) -> Result<Expr, FormulaError> {
        let cond = self.binary(0)?;
        if self.is_punct("?") {
            self.pos += 1;
            let yes = self.ternary()?;
            self.expect(":")?;
            let no = self.ternary()?;
            return Ok(Expr::Cond(Box::new(cond), Box::new(yes), Box::new(no)));
        }
        Ok(cond)
    }

    fn binop(&self) -> Option<(BinOp, u16, bool)> {
        let op = match self.peek() {
            Tok::Punct(p) => *p,
            Tok::Ident(w) if w == "or" => "||",
            Tok::Ident(w) if w == "and" => "&&",
            _ => return None,
        };
        // (operator, precedence, right-associative) as in expr-lang's parser table.
        Some(match op {
            "||" => (BinOp::Or, 10, false),
            "&&" => (BinOp::And, 15, false),
            "==" => (BinOp::Eq, 20, false),
            "!=" => (BinOp::Ne, 20, false),
            "<" => (BinOp::Lt, 20, false),
            "<=" => (BinOp::Le, 20, false),
            ">" => (BinOp::Gt, 20, false),
            ">=" => (BinOp::Ge, 20, false),
            "+" => (BinOp::Add, 30, false),
            "-" => (BinOp::Sub, 30, false),
            "*" => (BinOp::Mul, 60, false),
            "/" => (BinOp::Div, 60, false),
            "%" => (BinOp::Mod, 60, false),
            "**" | "^" => (BinOp::Pow, 100, true),
            "??" => (BinOp::Coalesce, 500, false),
            _ => return None,
        })
    }

    fn binary(&mut self, min_prec: u16) -> Result<Expr, FormulaError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec, right)) = self.binop() {
            if prec < min_prec {
                break;
            }
            self.pos += 1;
            let rhs = self.binary(if right { prec } else { prec + 1 })?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("formula nested too deeply");
        }
        let e = self.unary_inner();
        self.depth -= 1;
        e
    }

    fn unary_inner(&mut self) -> Result<Expr, FormulaError> {
        if self.is_punct("-") {
            self.pos += 1;
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.is_punct("+") {
            self.pos += 1;
            return self.unary();
        }
        if self.is_punct("!") || self.is_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FormulaError> {
        let position = self.position();
        match self.next() {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("[") => {
                let mut items = Vec::new();
                while !self.is_punct("]") {
                    items.push(self.ternary()?);
                    if !self.is_punct(",") {
                        break;
                    }
                    self.pos += 1;
                }
                self.expect("]")?;
                Ok(Expr::List(items))
            }
            Tok::Punct("#") if self.in_predicate => Ok(Expr::Pointer),
            Tok::Punct("#") => Err(FormulaError::Unsupported("# outside a predicate".to_string())),
            Tok::Ident(name) => self.ident(name),
            other => Err(FormulaError::Syntax {
                position,
                message: format!("unexpected {}", describe(&other)),
            }),
        }
    }

    fn ident(&mut self, name: String) -> Result<Expr, FormulaError> {
        match name.as_str() {
            "true" => return Ok(Expr::Bool(true)),
            "false" => return Ok(Expr::Bool(false)),
            "nil" => return Ok(Expr::Nil),
            _ => {}
        }
        if self.is_punct("(") {
            let Some(func) = Func::from_name(&name) else {
                return Err(FormulaError::Unsupported(format!("function {name}")));
            };
            self.pos += 1;
            let mut args = Vec::new();
            while !self.is_punct(")") {
                if func.takes_predicate() && args.len() == 1 {
                    args.push(self.predicate()?);
                } else {
                    // expr-lang parses arguments at precedence 0, where `let` is allowed.
                    args.push(self.expr()?);
                }
                if !self.is_punct(",") {
                    break;
                }
                self.pos += 1;
            }
            self.expect(")")?;
            check_arity(func, &name, args.len())?;
            return Ok(Expr::Call(func, args));
        }
        if self.is_punct(".") || self.is_punct("[") {
            return Err(FormulaError::Unsupported("member access".to_string()));
        }
        if let Some(i) = self.locals.iter().rposition(|l| *l == name) {
            return Ok(Expr::Local(i));
        }
        if self.vars.contains(&name.as_str()) {
            return Ok(Expr::Var(name));
        }
        Err(FormulaError::UnknownName(name))
    }

    fn predicate(&mut self) -> Result<Expr, FormulaError> {
        let braced = self.is_punct("{");
        if braced {
            self.pos += 1;
        }
        let saved = std::mem::replace(&mut self.in_predicate, true);
        let body = self.ternary();
        self.in_predicate = saved;
        let body = body?;
        if braced {
            self.expect("}")?;
        }
        Ok(body)
    }
}

fn check_arity(func: Func, name: &str, n: usize) -> Result<(), FormulaError> {
    let ok = match func {
        Func::Min | Func::Max => n >= 1,
        Func::Count | Func::All | Func::Any | Func::None => n == 2 || (func == Func::Count && n == 1),
        _ => n == 1,
    };
    if ok {
        Ok(())
    } else {
        Err(FormulaError::Syntax {
            position: 0,
            message: format!("wrong number of arguments for {name}: {n}"),
        })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number {n}"),
        Tok::Ident(i) => format!("name {i}"),
        Tok::Punct(p) => format!("{p:?}"),
        Tok::End => "end of formula".to_string(),
    }
}

/// KEDA's rewrite before compiling (§10.2): with `??` the result is kept nil or made a float;
/// otherwise the whole formula is wrapped in `float(..)` unless it already starts with it.
pub fn keda_rewrite(formula: &str) -> String {
    const PREFIX: &str = "let _kedaCompositeResult = ";
    if formula.contains("??") {
        if formula.starts_with(PREFIX) {
            return formula.to_string();
        }
        return format!(
            "{PREFIX}({formula}); _kedaCompositeResult == nil ? nil : float(_kedaCompositeResult)"
        );
    }
    if formula.starts_with("float(") {
        formula.to_string()
    } else {
        format!("float({formula})")
    }
}

/// Evaluates `so`'s scalingModifiers formula over its named triggers' `values` (a name without
/// a value is `nil`); `Ok(None)` is a nil result.
pub fn evaluate_for(
    so: &crate::crd::ScaledObject,
    values: &HashMap<String, Option<f64>>,
) -> Result<Option<f64>, FormulaError> {
    let source = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
        .and_then(|m| m.formula.as_deref())
        .unwrap_or_default();
    let vars: Vec<&str> = so
        .spec
        .triggers
        .iter()
        .filter_map(|t| t.name.as_deref())
        .filter(|n| !n.is_empty())
        .collect();
    compile(source, &vars)?.eval(values)
}

/// Adds one metric's value to its trigger's formula variable, as KEDA's composite-metric read
/// does: a trigger's metrics are summed, one nil metric makes the trigger nil, and unnamed
/// triggers are not variables.
pub fn add_to_trigger(values: &mut HashMap<String, Option<f64>>, trigger_name: &str, value: Option<f64>) {
    if trigger_name.is_empty() {
        return;
    }
    let slot = values.entry(trigger_name.to_string()).or_insert(Some(0.0));
    *slot = match (*slot, value) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
}

/// Compiles a scalingModifiers formula (after [`keda_rewrite`]) against the trigger names `vars`.
pub fn compile(src: &str, vars: &[&str]) -> Result<Formula, FormulaError> {
    let source = keda_rewrite(src);
    compile_raw(&source, vars).map(|expr| Formula { expr, source })
}

fn compile_raw(src: &str, vars: &[&str]) -> Result<Expr, FormulaError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        vars,
        locals: Vec::new(),
        in_predicate: false,
        depth: 0,
    };
    let e = p.expr()?;
    if *p.peek() != Tok::End {
        return p.err(format!("unexpected {}", describe(p.peek())));
    }
    Ok(e)
}

// === evaluation ===

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Nil,
    Num(f64),
    Bool(bool),
    List(Vec<Val>),
}

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "<nil>",
            Val::Num(_) => "float64",
            Val::Bool(_) => "bool",
            Val::List(_) => "[]interface {}",
        }
    }
}

fn rt<T>(msg: String) -> Result<T, FormulaError> {
    Err(FormulaError::Runtime(msg))
}

struct Env<'a> {
    values: &'a HashMap<String, Option<f64>>,
    locals: Vec<Val>,
    pointer: Option<Val>,
}

impl Formula {
    /// The expression actually compiled (after KEDA's rewrite).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with trigger values; a missing name or `None` is `nil`. Returns `None` for a nil result.
    pub fn eval(&self, values: &HashMap<String, Option<f64>>) -> Result<Option<f64>, FormulaError> {
        let mut env = Env {
            values,
            locals: Vec::new(),
            pointer: None,
        };
        match eval(&self.expr, &mut env)? {
            Val::Nil => Ok(None),
            Val::Num(n) => Ok(Some(n)),
            other => rt(format!("formula result is {}, not a number", other.type_name())),
        }
    }
}

fn num(v: &Val, what: &str) -> Result<f64, FormulaError> {
    match v {
        Val::Num(n) => Ok(*n),
        other => rt(format!("invalid operation: {what} on {}", other.type_name())),
    }
}

fn truthy(v: &Val) -> Result<bool, FormulaError> {
    match v {
        Val::Bool(b) => Ok(*b),
        other => rt(format!(
            "non-bool value {} used as a condition",
            other.type_name()
        )),
    }
}

fn eval(e: &Expr, env: &mut Env<'_>) -> Result<Val, FormulaError> {
    Ok(match e {
        Expr::Num(n) => Val::Num(*n),
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Nil => Val::Nil,
        Expr::Var(name) => env.values.get(name).copied().flatten().map_or(Val::Nil, Val::Num),
        Expr::Local(i) => env.locals.get(*i).cloned().unwrap_or(Val::Nil),
        Expr::Pointer => env.pointer.clone().unwrap_or(Val::Nil),
        Expr::List(items) => Val::List(items.iter().map(|i| eval(i, env)).collect::<Result<_, _>>()?),
        Expr::Neg(x) => Val::Num(-num(&eval(x, env)?, "-")?),
        Expr::Not(x) => Val::Bool(!truthy(&eval(x, env)?)?),
        Expr::Cond(c, y, n) => {
            if truthy(&eval(c, env)?)? {
                eval(y, env)?
            } else {
                eval(n, env)?
            }
        }
        Expr::Let(value, body) => {
            let v = eval(value, env)?;
            env.locals.push(v);
            let r = eval(body, env);
            env.locals.pop();
            r?
        }
        Expr::Bin(op, a, b) => binary(*op, a, b, env)?,
        Expr::Call(f, args) => call(*f, args, env)?,
    })
}

fn binary(op: BinOp, a: &Expr, b: &Expr, env: &mut Env<'_>) -> Result<Val, FormulaError> {
    let l = eval(a, env)?;
    match op {
        BinOp::And => return Ok(Val::Bool(truthy(&l)? && truthy(&eval(b, env)?)?)),
        BinOp::Or => return Ok(Val::Bool(truthy(&l)? || truthy(&eval(b, env)?)?)),
        BinOp::Coalesce => return if l == Val::Nil { eval(b, env) } else { Ok(l) },
        _ => {}
    }
    let r = eval(b, env)?;
    if matches!(op, BinOp::Eq | BinOp::Ne) {
        let eq = l == r;
        return Ok(Val::Bool(if op == BinOp::Eq { eq } else { !eq }));
    }
    let (x, y) = match (&l, &r) {
        (Val::Num(x), Val::Num(y)) => (*x, *y),
        _ => {
            return rt(format!(
                "invalid operation: {} {} {}",
                l.type_name(),
                op_text(op),
                r.type_name()
            ));
        }
    };
    Ok(match op {
        BinOp::Add => Val::Num(x + y),
        BinOp::Sub => Val::Num(x - y),
        BinOp::Mul => Val::Num(x * y),
        // expr-lang's `/` is always float division, so x/0 is ±Inf as in Go.
        BinOp::Div => Val::Num(x / y),
        BinOp::Pow => Val::Num(x.powf(y)),
        BinOp::Mod => {
            // expr-lang's `%` is integer-only.
            if x.fract() != 0.0 || y.fract() != 0.0 {
                return rt("invalid operation: float64 % float64".to_string());
            }
            if y == 0.0 {
                return rt("integer divide by zero".to_string());
            }
            Val::Num((x as i64).wrapping_rem(y as i64) as f64)
        }
        BinOp::Lt => Val::Bool(x < y),
        BinOp::Le => Val::Bool(x <= y),
        BinOp::Gt => Val::Bool(x > y),
        BinOp::Ge => Val::Bool(x >= y),
        BinOp::Eq | BinOp::Ne | BinOp::And | BinOp::Or | BinOp::Coalesce => Val::Nil,
    })
}

fn op_text(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        BinOp::Pow => "**",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::And => "&&",
        BinOp::Or => "||",
        BinOp::Coalesce => "??",
    }
}

fn call(f: Func, args: &[Expr], env: &mut Env<'_>) -> Result<Val, FormulaError> {
    if f.takes_predicate() {
        let list = match eval(&args[0], env)? {
            Val::List(l) => l,
            other => return rt(format!("cannot iterate over {}", other.type_name())),
        };
        let mut hits = 0usize;
        for item in &list {
            let hit = match args.get(1) {
                Some(pred) => {
                    let saved = env.pointer.replace(item.clone());
                    let r = eval(pred, env);
                    env.pointer = saved;
                    truthy(&r?)?
                }
                None => truthy(item)?,
            };
            hits += usize::from(hit);
        }
        return Ok(match f {
            Func::Count => Val::Num(hits as f64),
            Func::All => Val::Bool(hits == list.len()),
            Func::Any => Val::Bool(hits > 0),
            _ => Val::Bool(hits == 0),
        });
    }
    let vals: Vec<Val> = args.iter().map(|a| eval(a, env)).collect::<Result<_, _>>()?;
    let one = || num(&vals[0], fname(f));
    Ok(match f {
        Func::Float => match &vals[0] {
            Val::Num(n) => Val::Num(*n),
            other => return rt(format!("invalid argument for float (type {})", other.type_name())),
        },
        Func::Int => match &vals[0] {
            Val::Num(n) => Val::Num(n.trunc()),
            other => return rt(format!("invalid argument for int (type {})", other.type_name())),
        },
        Func::Abs => Val::Num(one()?.abs()),
        Func::Ceil => Val::Num(one()?.ceil()),
        Func::Floor => Val::Num(one()?.floor()),
        Func::Round => Val::Num(one()?.round()),
        Func::Len => match &vals[0] {
            Val::List(l) => Val::Num(l.len() as f64),
            other => return rt(format!("invalid argument for len (type {})", other.type_name())),
        },
        Func::Sum => match &vals[0] {
            Val::List(l) => Val::Num(l.iter().map(|v| num(v, "sum")).sum::<Result<f64, _>>()?),
            other => return rt(format!("invalid argument for sum (type {})", other.type_name())),
        },
        Func::Min | Func::Max => {
            let flat: Vec<&Val> = vals
                .iter()
                .flat_map(|v| match v {
                    Val::List(l) => l.iter().collect::<Vec<_>>(),
                    other => vec![other],
                })
                .collect();
            let mut best: Option<f64> = None;
            for v in flat {
                let n = num(v, fname(f))?;
                best = Some(match best {
                    None => n,
                    Some(b) if f == Func::Min => b.min(n),
                    Some(b) => b.max(n),
                });
            }
            best.map_or(Val::Nil, Val::Num)
        }
        Func::Count | Func::All | Func::Any | Func::None => Val::Nil,
    })
}

fn fname(f: Func) -> &'static str {
    match f {
        Func::Float => "float",
        Func::Int => "int",
        Func::Abs => "abs",
        Func::Min => "min",
        Func::Max => "max",
        Func::Ceil => "ceil",
        Func::Floor => "floor",
        Func::Round => "round",
        Func::Len => "len",
        Func::Sum => "sum",
        Func::Count => "count",
        Func::All => "all",
        Func::Any => "any",
        Func::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, Option<f64>)]) -> HashMap<String, Option<f64>> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn run(src: &str, vars: &[(&str, Option<f64>)]) -> Result<Option<f64>, FormulaError> {
        let names: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
        compile(src, &names)?.eval(&vals(vars))
    }

    #[test]
    fn webhook_examples_compile_and_run_with_minus_one() {
        let two = [("trig_one", Some(-1.0)), ("trig_two", Some(-1.0))];
        let wc = [("workload_trig", Some(-1.0)), ("cron_trig", Some(-1.0))];
        assert_eq!(run("workload_trig + cron_trig", &wc), Ok(Some(-2.0)));
        assert_eq!(run("float(workload_trig + 1)", &wc), Ok(Some(0.0)));
        assert_eq!(
            run("workload_trig < 5 ? cron_trig + workload_trig : 5", &wc),
            Ok(Some(-2.0))
        );
        assert_eq!(
            run("count([trig_one,trig_two],{#>1}) > 1 ? 5 : 0", &two),
            Ok(Some(0.0))
        );
        assert_eq!(
            run("float(trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0)", &two),
            Ok(Some(10.0))
        );
        assert_eq!(
            run("float(float(trig_two < 5 ? trig_one + trig_two : 5))", &two),
            Ok(Some(-2.0))
        );
        let pf = [("primary", Some(-1.0)), ("secondary", Some(-1.0))];
        assert_eq!(run("primary ?? secondary ?? 8", &pf), Ok(Some(-1.0)));
    }

    #[test]
    fn coalescing_fallback_example() {
        let f = compile("primary ?? secondary ?? 8", &["primary", "secondary"]).expect("compiles");
        let target = 2.0;
        let replicas = |p, s| {
            f.eval(&vals(&[("primary", p), ("secondary", s)]))
                .map(|v| v.map(|v| v / target))
        };
        assert_eq!(replicas(Some(16.0), Some(12.0)), Ok(Some(8.0)));
        assert_eq!(replicas(None, Some(12.0)), Ok(Some(6.0)));
        assert_eq!(replicas(None, None), Ok(Some(4.0)));
        let g = compile("a ?? b", &["a", "b"]).expect("compiles");
        assert_eq!(g.eval(&vals(&[])), Ok(None));
    }

    #[test]
    fn operators_and_functions() {
        let x = [("x", Some(7.0)), ("y", Some(2.0))];
        assert_eq!(run("x % y", &x), Ok(Some(1.0)));
        assert_eq!(run("x / y", &x), Ok(Some(3.5)));
        assert_eq!(run("-x + 2 ** 3", &x), Ok(Some(1.0)));
        assert_eq!(run("2 ^ 3 ^ 2", &x), Ok(Some(512.0)));
        assert_eq!(
            run("x > 5 && y < 1 ? 1 : x > 5 and not (y < 1) ? 2 : 3", &x),
            Ok(Some(2.0))
        );
        assert_eq!(run("!(x == 7) || x != 7 ? 1 : 0", &x), Ok(Some(0.0)));
        assert_eq!(run("min(x, y, 5) + max([x, y]) + abs(-1)", &x), Ok(Some(10.0)));
        assert_eq!(
            run("ceil(x / y) + floor(x / y) + round(2.5) + int(x / y)", &x),
            Ok(Some(13.0))
        );
        assert_eq!(run("let z = x * 2; z + y", &x), Ok(Some(16.0)));
        assert_eq!(run("sum([x, y]) + len([1, 2, 3])", &x), Ok(Some(12.0)));
        assert_eq!(run("any([x, y], # > 5) ? 1 : 0", &x), Ok(Some(1.0)));
        assert_eq!(run("1_000 + 1e3", &x), Ok(Some(2000.0)));
        assert_eq!(run("x <= 7 ? (x >= 7 ? 1 : 2) : 3", &x), Ok(Some(1.0)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            compile("a + b", &["a"]).map(|_| ()),
            Err(FormulaError::UnknownName("b".to_string()))
        );
        assert!(matches!(compile("a +", &["a"]), Err(FormulaError::Syntax { .. })));
        assert!(matches!(
            compile("foo(a)", &["a"]),
            Err(FormulaError::Unsupported(_))
        ));
        assert!(matches!(compile("a.b", &["a"]), Err(FormulaError::Syntax { .. })));
        assert!(matches!(compile("'s'", &[]), Err(FormulaError::Unsupported(_))));
        assert!(matches!(
            run("x > 1", &[("x", Some(2.0))]),
            Err(FormulaError::Runtime(_))
        ));
        assert!(matches!(
            run("x + 1", &[("x", None)]),
            Err(FormulaError::Runtime(_))
        ));
        assert!(matches!(
            run("x % 0", &[("x", Some(2.0))]),
            Err(FormulaError::Runtime(_))
        ));
        assert!(matches!(
            run("x % 1.5", &[("x", Some(2.0))]),
            Err(FormulaError::Runtime(_))
        ));
    }

    #[test]
    fn rewrite_matches_keda() {
        assert_eq!(keda_rewrite("a + b"), "float(a + b)");
        assert_eq!(keda_rewrite("float(a)"), "float(a)");
        assert_eq!(
            keda_rewrite("a ?? 1"),
            "let _kedaCompositeResult = (a ?? 1); _kedaCompositeResult == nil ? nil : float(_kedaCompositeResult)"
        );
    }
}
