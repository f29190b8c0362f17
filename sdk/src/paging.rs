//! Numbered pages (`?page=N&per_page=M`): which page to ask for next, and when to stop.
//!
//! Cursor pages (a `next` link or token) end where the API says. Numbered
//! pages do not always: some APIs answer a page past the last with an empty
//! list, others with the last page again, and records that change while a
//! poll reads them move between pages. [`NumberedPages`] stops on whichever
//! comes first: an empty page, a short page, the total the API announced, a
//! page whose records are the previous page's again, or the most pages one
//! poll may read. Ask the API for records sorted oldest first by change time
//! and keep the cursor with a [`Watermark`](crate::cursor::Watermark), which
//! drops records read twice; see the connector guide.

/// Why [`NumberedPages::read`] says to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The page had no records.
    Empty,
    /// The page had fewer records than the page size: it was the last.
    Short,
    /// The pages read cover the total the API announced.
    Total,
    /// The page had the same records as the one before (an API that
    /// answers a page past the last with the last page again): none of
    /// its records are new.
    Repeated,
    /// The most pages one poll reads: return what was read with its cursor,
    /// and the next poll goes on from there.
    MaxPages,
}

/// Where a poll is in a numbered listing. See the [module docs](self).
///
/// ```
/// use switchyard_sdk::paging::{NumberedPages, Stop};
///
/// // 4 records, 2 a page; page 3, past the end, is page 2 again.
/// let pages = [vec!["a", "b"], vec!["c", "d"], vec!["c", "d"]];
/// let mut paging = NumberedPages::new(2);
/// let mut read = Vec::new();
/// let stop = loop {
///     let page = &pages[paging.page() as usize - 1]; // GET ?page=N&per_page=2
///     match paging.read(page) {
///         Ok(_next) => read.extend(page.iter().copied()),
///         Err(Stop::Repeated) => break Stop::Repeated,
///         Err(stop) => {
///             read.extend(page.iter().copied());
///             break stop;
///         }
///     }
/// };
/// assert_eq!((stop, read), (Stop::Repeated, vec!["a", "b", "c", "d"]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedPages {
    /// The page to ask for next.
    page: u32,
    page_size: u32,
    pages_read: u32,
    max_pages: Option<u32>,
    /// Pages there are, when the API said (`X-WP-TotalPages`, or a record
    /// count divided by the page size).
    total_pages: Option<u64>,
    /// The ids of the last page read, to notice it coming again.
    last_ids: Vec<String>,
}

impl NumberedPages {
    /// Pages of `page_size` records (the size the API really answers with:
    /// some cap what is asked for), numbered from 1, with no limit on the
    /// pages one poll reads.
    pub fn new(page_size: u32) -> Self {
        Self {
            page: 1,
            page_size: page_size.max(1),
            pages_read: 0,
            max_pages: None,
            total_pages: None,
            last_ids: Vec::new(),
        }
    }

    /// Numbers the pages from `first` (0 for APIs that count from zero).
    pub fn first_page(mut self, first: u32) -> Self {
        self.page = first;
        self
    }

    /// Reads at most `pages` pages (at least 1) in this poll.
    pub fn max_pages(mut self, pages: u32) -> Self {
        self.max_pages = Some(pages.max(1));
        self
    }

    /// The page number to ask for next.
    pub fn page(&self) -> u32 {
        self.page
    }

    /// The page size to ask for.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Pages read so far.
    pub fn pages_read(&self) -> u32 {
        self.pages_read
    }

    /// What the API says there is, in records (`X-Total-Count`, a `total`
    /// field); call it before [`read`](Self::read) with each page's figure.
    pub fn total_records(&mut self, records: u64) {
        self.total_pages = Some(records.div_ceil(u64::from(self.page_size)));
    }

    /// What the API says there is, in pages (`X-WP-TotalPages`).
    pub fn total_pages(&mut self, pages: u64) {
        self.total_pages = Some(pages);
    }

    /// Takes the ids of a page's records, in the order the API listed
    /// them: `Ok(page)` to ask for that page next, `Err(stop)` when the
    /// listing (or this poll's share of it) is read. Use the records of
    /// the page in either case, except after [`Stop::Repeated`].
    pub fn read<I: AsRef<str>>(&mut self, ids: &[I]) -> Result<u32, Stop> {
        self.pages_read += 1;
        let repeated = !ids.is_empty()
            && ids.len() == self.last_ids.len()
            && ids.iter().zip(&self.last_ids).all(|(a, b)| a.as_ref() == b);
        let stop = if ids.is_empty() {
            Some(Stop::Empty)
        } else if repeated {
            Some(Stop::Repeated)
        } else if ids.len() < self.page_size as usize {
            Some(Stop::Short)
        } else if self
            .total_pages
            .is_some_and(|total| u64::from(self.pages_read) >= total)
        {
            Some(Stop::Total)
        } else if self.max_pages.is_some_and(|max| self.pages_read >= max) {
            Some(Stop::MaxPages)
        } else {
            None
        };
        self.last_ids = ids.iter().map(|id| id.as_ref().to_owned()).collect();
        match stop {
            Some(stop) => Err(stop),
            None => {
                self.page += 1;
                Ok(self.page)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `pages` (the API's answers, page by page) until told to stop:
    /// the pages asked for and why it stopped.
    fn run(mut paging: NumberedPages, total: Option<u64>, pages: &[&[&str]]) -> (Vec<u32>, Stop) {
        let mut asked = Vec::new();
        for page in pages {
            asked.push(paging.page());
            if let Some(total) = total {
                paging.total_records(total);
            }
            if let Err(stop) = paging.read(page) {
                return (asked, stop);
            }
        }
        panic!("never stopped after asking for {asked:?}");
    }

    #[test]
    fn stops_where_the_listing_ends() {
        let two = NumberedPages::new(2);
        // (case, paging, total records, the API's pages) -> pages asked for, stop
        type Case<'a> = (
            &'a str,
            NumberedPages,
            Option<u64>,
            &'a [&'a [&'a str]],
            &'a [u32],
            Stop,
        );
        let cases: &[Case] = &[
            (
                "empty listing",
                two.clone(),
                None,
                &[&[]],
                &[1],
                Stop::Empty,
            ),
            (
                "short last page",
                two.clone(),
                None,
                &[&["a", "b"], &["c"]],
                &[1, 2],
                Stop::Short,
            ),
            (
                "an empty page after full ones",
                two.clone(),
                None,
                &[&["a", "b"], &["c", "d"], &[]],
                &[1, 2, 3],
                Stop::Empty,
            ),
            (
                "past the end comes the last page again",
                two.clone(),
                None,
                &[&["a", "b"], &["c", "d"], &["c", "d"]],
                &[1, 2, 3],
                Stop::Repeated,
            ),
            (
                "the total ends a listing of full pages",
                two.clone(),
                Some(4),
                &[&["a", "b"], &["c", "d"], &["c", "d"]],
                &[1, 2],
                Stop::Total,
            ),
            (
                "a total that is not a whole page",
                two.clone(),
                Some(3),
                &[&["a", "b"], &["c"]],
                &[1, 2],
                Stop::Short,
            ),
            (
                "a total of nothing still reads the first page",
                two.clone(),
                Some(0),
                &[&["a", "b"]],
                &[1],
                Stop::Total,
            ),
            (
                "a record moved back a page: not the same page",
                two.clone(),
                None,
                &[&["a", "b"], &["b", "c"], &["d"]],
                &[1, 2, 3],
                Stop::Short,
            ),
            (
                "this poll's share",
                two.clone().max_pages(2),
                None,
                &[&["a", "b"], &["c", "d"], &["e", "f"]],
                &[1, 2],
                Stop::MaxPages,
            ),
            (
                "numbered from zero",
                two.clone().first_page(0),
                None,
                &[&["a", "b"], &["c"]],
                &[0, 1],
                Stop::Short,
            ),
        ];
        for (name, paging, total, pages, asked, stop) in cases {
            assert_eq!(
                run(paging.clone(), *total, pages),
                (asked.to_vec(), *stop),
                "{name}"
            );
        }
    }

    #[test]
    fn knows_the_page_and_its_size() {
        let mut paging = NumberedPages::new(0);
        assert_eq!((paging.page(), paging.page_size()), (1, 1));
        paging.total_pages(3);
        assert_eq!(paging.read(&["a"]), Ok(2));
        assert_eq!(paging.read(&["b"]), Ok(3));
        assert_eq!(paging.read(&["c"]), Err(Stop::Total));
        assert_eq!(paging.pages_read(), 3);
    }
}
